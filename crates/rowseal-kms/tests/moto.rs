//! Round trips, aliases, ReEncrypt and call counts through the real SDK against
//! a real KMS-compatible server (moto), via `KeyHierarchy`.
//!
//! Run: `bash scripts/with-kms-server.sh cargo test -p rowseal-kms`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::proxy::{Fault, FaultProxy};
use common::{admin_client, builder, create_key, key_id_of, provider_error, unique_alias, REGION};
use rowseal_core::{
    CountingKeyProvider, EncryptionContext, FieldName, FieldSet, KeyHierarchy, KeyMode,
    KeyProvider, KeyPurpose, KeyRecord, KeyStore, MemoryKeyStore, ProviderErrorKind, RecordSpec,
    RowHeader,
};
use rowseal_kms::AwsKmsProvider;

/// The rows of these tests have one encrypted field, `email`, always set.
fn email_only() -> FieldSet {
    FieldSet::new(["email"]).unwrap()
}

const USER: RecordSpec = RecordSpec::new("user", "users");
const AUDIT: RecordSpec = RecordSpec::new("audit", "audit_log").with_key_mode(KeyMode::Kms);

struct Written {
    tenant: String,
    header: Vec<u8>,
    email: Vec<u8>,
    plain: String,
}

async fn write_rows(
    keys: &KeyHierarchy,
    spec: &RecordSpec,
    tenants: usize,
    rows: usize,
) -> Vec<Written> {
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let tenant = format!("tenant-{}", i % tenants);
        let row = keys
            .new_row_key(spec, &tenant, None, &email_only())
            .await
            .unwrap();
        let plain = format!("user{i}@example.com");
        out.push(Written {
            email: row
                .seal(FieldName::same("email"), plain.as_bytes())
                .unwrap(),
            header: row.header_bytes(),
            tenant,
            plain,
        });
    }
    out
}

async fn read_rows(keys: &KeyHierarchy, spec: &RecordSpec, rows: &[Written]) {
    for w in rows {
        let row = keys
            .open_row_key(spec, &w.tenant, None, &w.header, &email_only())
            .await
            .unwrap();
        assert_eq!(
            row.open(FieldName::same("email"), &w.email).unwrap(),
            w.plain.as_bytes()
        );
    }
}

#[tokio::test]
async fn round_trip_in_both_key_modes() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let kms = Arc::new(builder(key_id_of(&arn), &endpoint).build().await.unwrap());
    assert_eq!(
        kms.current_key_id(),
        arn,
        "a bare key id resolves to the ARN"
    );
    assert_eq!(kms.name(), "aws-kms");

    let store = Arc::new(MemoryKeyStore::new());
    let writer = KeyHierarchy::new(kms.clone(), store.clone());
    let derived = write_rows(&writer, &USER, 2, 20).await;
    let per_row = write_rows(&writer, &AUDIT, 2, 5).await;

    // Every stored tenant key and every row data key names the key ARN.
    for rec in store.records() {
        assert_eq!(rec.wrapped.as_ref().unwrap().key_id(), arn);
    }
    for w in &per_row {
        let header = RowHeader::from_bytes(&w.header).unwrap();
        assert_eq!(header.wrapped_data_key().unwrap().key_id(), arn);
    }

    // A fresh hierarchy (cold caches, as in another process) reads them back.
    let reader = KeyHierarchy::new(kms.clone(), store.clone());
    read_rows(&reader, &USER, &derived).await;
    read_rows(&reader, &AUDIT, &per_row).await;

    // Another tenant's reader cannot open them.
    let w = &derived[0];
    assert!(reader
        .open_row_key(&USER, "tenant-x", None, &w.header, &email_only())
        .await
        .is_err());
    let c = kms.call_counts();
    assert_eq!(c.describe_key.calls, 1);
    assert_eq!(c.generate_data_key.calls, 2 + 5);
    assert_eq!(c.decrypt.calls, 2 + 5);
}

#[tokio::test]
async fn wrong_encryption_context_is_invalid_ciphertext_and_not_retried() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let kms = builder(&arn, &endpoint).build().await.unwrap();

    let dk = kms
        .generate_data_key(&EncryptionContext::tenant_key("tenant-1", 1))
        .await
        .unwrap();
    assert_eq!(dk.wrapped.key_id(), arn);
    let back = kms
        .decrypt_data_key(&dk.wrapped, &EncryptionContext::tenant_key("tenant-1", 1))
        .await
        .unwrap();
    assert_eq!(back, dk.plaintext);

    let before = kms.call_counts().decrypt;
    for wrong in [
        EncryptionContext::tenant_key("tenant-2", 1),
        EncryptionContext::index_key(Some("tenant-1"), 1),
        EncryptionContext::row_data_key("user", "tenant-1"),
        EncryptionContext::default(),
    ] {
        let err = kms.decrypt_data_key(&dk.wrapped, &wrong).await.unwrap_err();
        let pe = provider_error(&err);
        assert_eq!(pe.kind(), ProviderErrorKind::InvalidCiphertext, "{err}");
        assert_eq!(pe.key_id(), Some(arn.as_str()));
        assert_eq!(common::aws_detail(pe).attempts(), 1);
    }
    let after = kms.call_counts().decrypt;
    assert_eq!(
        after.requests - before.requests,
        4,
        "one request each, no retry"
    );
    assert_eq!(after.failures - before.failures, 4);

    // A changed ciphertext is refused the same way.
    let mut blob = dk.wrapped.ciphertext().to_vec();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let tampered = rowseal_core::WrappedKey::new(arn.clone(), blob).unwrap();
    let err = kms
        .decrypt_data_key(&tampered, &EncryptionContext::tenant_key("tenant-1", 1))
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::InvalidCiphertext
    );

    // A wrapped key that names no KMS key never reaches KMS.
    let requests = kms.call_counts().total_requests();
    let local = rowseal_core::WrappedKey::new("local:v1", vec![1; 40]).unwrap();
    let err = kms
        .decrypt_data_key(&local, &EncryptionContext::tenant_key("tenant-1", 1))
        .await
        .unwrap_err();
    assert_eq!(provider_error(&err).kind(), ProviderErrorKind::KeyNotFound);
    assert_eq!(kms.call_counts().total_requests(), requests);
}

#[tokio::test]
async fn decrypt_pins_the_recorded_key() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let a = create_key(&admin, false).await;
    let b = create_key(&admin, false).await;
    // B is allowed, so that the request is sent and KMS's answer is checked.
    let kms = builder(&a, &endpoint).allow_key(&b).build().await.unwrap();
    let ctx = EncryptionContext::tenant_key("t", 1);
    let dk = kms.generate_data_key(&ctx).await.unwrap();
    // The same ciphertext, relabelled as key B's: KMS must refuse, not use A.
    let relabelled =
        rowseal_core::WrappedKey::new(b.clone(), dk.wrapped.ciphertext().to_vec()).unwrap();
    let err = kms.decrypt_data_key(&relabelled, &ctx).await.unwrap_err();
    let kind = provider_error(&err).kind();
    assert!(
        matches!(
            kind,
            ProviderErrorKind::InvalidCiphertext | ProviderErrorKind::AccessDenied
        ),
        "{err}"
    );
    assert_eq!(common::aws_detail(provider_error(&err)).attempts(), 1);
}

/// Issue 13, finding 1: the database must not choose the KMS key. Someone
/// who can write the database and holds a KMS key of their own that the
/// application's role may use plants a newer active tenant-key version
/// wrapped under that key (its plaintext is known to them). The application
/// must refuse it before asking KMS, not adopt it for new rows.
#[tokio::test]
async fn a_tenant_key_planted_under_another_kms_key_is_refused_before_kms_is_asked() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let app_key = create_key(&admin, false).await;
    let attacker_key = create_key(&admin, false).await;
    // The application reaches KMS through a proxy that counts every HTTP
    // request the server receives.
    let proxy = FaultProxy::start(&endpoint).await;
    let kms = Arc::new(builder(&app_key, &proxy.url).build().await.unwrap());
    assert_eq!(
        kms.allowed_keys(),
        std::slice::from_ref(&app_key),
        "the configured key only"
    );
    let store = Arc::new(MemoryKeyStore::new());
    let app = KeyHierarchy::new(kms.clone(), store.clone());
    let tenant = "tenant-0";
    let derived = write_rows(&app, &USER, 1, 3).await;
    let per_row = write_rows(&app, &AUDIT, 1, 1).await;
    let v1 = store.records();
    assert_eq!(v1.len(), 1);

    // The attacker makes a tenant key under their own KMS key, with the
    // context the hierarchy unwraps tenant keys with, and inserts it as the
    // tenant's newest active version.
    let attacker = builder(&attacker_key, &endpoint).build().await.unwrap();
    // Wrapped under the right context (tenant and version), as an attacker
    // who read the format would: only the root key is wrong.
    let planted = attacker
        .generate_data_key(&EncryptionContext::tenant_key(tenant, v1[0].version + 1))
        .await
        .unwrap();
    assert_eq!(planted.wrapped.key_id(), attacker_key);
    assert!(store
        .insert(&KeyRecord {
            version: v1[0].version + 1,
            wrapped: Some(planted.wrapped.clone()),
            state: rowseal_core::KeyState::Active,
            ..v1[0].clone()
        })
        .await
        .unwrap());

    // A fresh hierarchy (a restarted application, cold cache) refuses it,
    // typed, naming the refused key, and nothing reaches KMS.
    let before = kms.call_counts();
    proxy.reset_log();
    let victim = KeyHierarchy::new(kms.clone(), store.clone());
    let err = victim
        .new_row_key(&USER, tenant, None, &email_only())
        .await
        .expect_err("a new row under the planted tenant key");
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::KeyNotAllowed, "{err}");
    assert_eq!(pe.key_id(), Some(attacker_key.as_str()));
    assert!(err.to_string().contains("allow-list"), "{err}");
    assert!(!pe.kind().is_retryable());
    let err = victim.current_tenant_key(tenant).await.unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyNotAllowed
    );

    // The same for a kms-mode row whose header the attacker rewrote to carry
    // a data key wrapped under their key.
    let header = RowHeader::from_bytes(&per_row[0].header).unwrap();
    let data_key = attacker
        .generate_data_key(&EncryptionContext::row_data_key(
            AUDIT.record_type(),
            tenant,
        ))
        .await
        .unwrap();
    let forged = header
        .with_wrapped_data_key(data_key.wrapped)
        .unwrap()
        .to_bytes();
    let err = victim
        .open_row_key(&AUDIT, tenant, None, &forged, &email_only())
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyNotAllowed,
        "{err}"
    );

    let after = kms.call_counts();
    assert_eq!(after.decrypt, before.decrypt, "no Decrypt call or request");
    assert_eq!(after.total_requests(), before.total_requests());
    assert_eq!(proxy.count(None), 0, "the KMS server received no request");

    // Rows under the application's own key still open.
    read_rows(&victim, &USER, &derived).await;
    read_rows(&victim, &AUDIT, &per_row).await;
    assert_eq!(proxy.count(Some("Decrypt")), 2);
}

/// A key put on the allow-list explicitly is used: the same planted record
/// opens once its key is allowed (here, the application's previous key).
#[tokio::test]
async fn a_key_on_the_allow_list_decrypts() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let current = create_key(&admin, false).await;
    let previous = create_key(&admin, false).await;
    let old = builder(&previous, &endpoint).build().await.unwrap();
    let ctx = EncryptionContext::tenant_key("t", 1);
    let dk = old.generate_data_key(&ctx).await.unwrap();

    let kms = builder(&current, &endpoint)
        .allow_key(&previous)
        .allow_keys([previous.clone(), current.clone()])
        .build()
        .await
        .unwrap();
    assert_eq!(
        kms.allowed_keys(),
        [current.clone(), previous.clone()],
        "the configured key first, then the others in order, once each"
    );
    let debug = format!("{kms:?}");
    assert!(
        debug.contains("allowed_keys") && debug.contains(&previous),
        "{debug}"
    );
    assert_eq!(
        kms.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
        dk.plaintext
    );
    assert_eq!(kms.call_counts().decrypt.requests, 1);

    // Through a hierarchy too: a tenant key made under the previous key.
    let store = Arc::new(MemoryKeyStore::new());
    store
        .insert(&KeyRecord {
            purpose: KeyPurpose::Tenant,
            scope: rowseal_core::KeyScope::Tenant("t".into()),
            version: 1,
            wrapped: Some(dk.wrapped.clone()),
            state: rowseal_core::KeyState::Active,
        })
        .await
        .unwrap();
    let keys = KeyHierarchy::new(Arc::new(kms), store);
    keys.new_row_key(&USER, "t", None, &email_only())
        .await
        .unwrap();
}

/// `ReEncrypt` refuses a source key that is not allowed, before any request
/// (not even the `DescribeKey` of the destination); the destination is the
/// operator's choice and need not be on the list.
#[tokio::test]
async fn rewrap_from_a_key_not_on_the_allow_list_is_refused() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let app_key = create_key(&admin, false).await;
    let other = create_key(&admin, false).await;
    let destination = create_key(&admin, false).await;
    let ctx = EncryptionContext::index_key(None, 1);
    let foreign = builder(&other, &endpoint)
        .build()
        .await
        .unwrap()
        .generate_data_key(&ctx)
        .await
        .unwrap();

    let proxy = FaultProxy::start(&endpoint).await;
    let kms = builder(&app_key, &proxy.url).build().await.unwrap();
    let before = kms.call_counts();
    proxy.reset_log();
    let err = kms
        .reencrypt_data_key(&foreign.wrapped, &ctx, &destination)
        .await
        .unwrap_err();
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::KeyNotAllowed, "{err}");
    assert_eq!(pe.key_id(), Some(other.as_str()));
    let after = kms.call_counts();
    assert_eq!(after.reencrypt, before.reencrypt, "no ReEncrypt call");
    assert_eq!(after.total_requests(), before.total_requests());
    assert_eq!(proxy.count(None), 0, "the KMS server received no request");

    // The application's own keys rewrap to a destination not on its list.
    let own = kms.generate_data_key(&ctx).await.unwrap();
    let moved = kms
        .reencrypt_data_key(&own.wrapped, &ctx, &destination)
        .await
        .unwrap();
    assert_eq!(moved.key_id(), destination);
    assert_eq!(proxy.count(Some("ReEncrypt")), 1);
    // ...which this provider then does not read back: readers need the
    // destination on their list.
    let err = kms.decrypt_data_key(&moved, &ctx).await.unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyNotAllowed
    );
}

/// Allow-list entries must be key ARNs: anything else fails the build, before
/// any request (a stored key id is always an ARN, so an alias or a bare key
/// id would never match).
#[tokio::test]
async fn build_rejects_allow_list_entries_that_are_not_key_arns() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let alias = unique_alias("allow");
    admin
        .create_alias()
        .alias_name(&alias)
        .target_key_id(key_id_of(&arn))
        .send()
        .await
        .unwrap();
    let proxy = FaultProxy::start(&endpoint).await;
    let alias_arn = arn.replace(&format!("key/{}", key_id_of(&arn)), &alias);
    for bad in [
        alias.as_str(),
        alias_arn.as_str(),
        key_id_of(&arn),
        "arn:aws:kms:us-east-1:111122223333:key/",
        "",
    ] {
        let err = builder(&arn, &proxy.url)
            .allow_key(bad)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, rowseal_core::Error::KeyConfig { reason } if reason.contains("not a key ARN")),
            "{bad:?}: {err}"
        );
        assert!(rowseal_kms::check_allowed_key(bad).is_err(), "{bad:?}");
    }
    assert_eq!(proxy.count(None), 0, "rejected before anything was sent");
    rowseal_kms::check_allowed_key(&arn).unwrap();
    builder(&arn, &proxy.url)
        .allow_keys([arn.clone()])
        .build()
        .await
        .unwrap();
}

#[tokio::test]
async fn alias_moved_to_a_new_key_still_decrypts_old_data() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let old = create_key(&admin, false).await;
    let new = create_key(&admin, false).await;
    let alias = unique_alias("moved");
    admin
        .create_alias()
        .alias_name(&alias)
        .target_key_id(key_id_of(&old))
        .send()
        .await
        .unwrap();

    let store = Arc::new(MemoryKeyStore::new());
    let kms1 = Arc::new(builder(&alias, &endpoint).build().await.unwrap());
    assert_eq!(kms1.configured_key_id(), alias);
    assert_eq!(
        kms1.key_arn(),
        old,
        "the alias resolves to the old key's ARN"
    );
    let keys1 = KeyHierarchy::new(kms1.clone(), store.clone());
    let derived = write_rows(&keys1, &USER, 3, 9).await;
    let per_row = write_rows(&keys1, &AUDIT, 3, 3).await;

    admin
        .update_alias()
        .alias_name(&alias)
        .target_key_id(key_id_of(&new))
        .send()
        .await
        .unwrap();

    // A provider built now follows the alias for new keys, and is refused
    // the old key's wrapped keys until that key is on its allow-list...
    let strict = Arc::new(builder(&alias, &endpoint).build().await.unwrap());
    assert_eq!(strict.key_arn(), new);
    let err = KeyHierarchy::new(strict.clone(), store.clone())
        .open_row_key(
            &USER,
            &derived[0].tenant,
            None,
            &derived[0].header,
            &email_only(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyNotAllowed
    );
    let kms2 = Arc::new(
        builder(&alias, &endpoint)
            .allow_key(&old)
            .build()
            .await
            .unwrap(),
    );
    assert_eq!(kms2.key_arn(), new);
    let keys2 = KeyHierarchy::new(kms2.clone(), store.clone());
    // ...and still opens everything written under the old key.
    read_rows(&keys2, &USER, &derived).await;
    read_rows(&keys2, &AUDIT, &per_row).await;
    let more = write_rows(&keys2, &AUDIT, 1, 2).await;
    for w in &more {
        let header = RowHeader::from_bytes(&w.header).unwrap();
        assert_eq!(header.wrapped_data_key().unwrap().key_id(), new);
    }
    // Old tenant keys keep naming the old key.
    assert!(store
        .records()
        .iter()
        .all(|r| r.wrapped.as_ref().unwrap().key_id() == old));
}

fn context_of(rec: &KeyRecord) -> EncryptionContext {
    rec.encryption_context()
}

#[tokio::test]
async fn reencrypt_to_a_second_key_then_the_first_is_not_needed() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let first = create_key(&admin, false).await;
    let second = create_key(&admin, false).await;
    let alias = unique_alias("second");
    admin
        .create_alias()
        .alias_name(&alias)
        .target_key_id(key_id_of(&second))
        .send()
        .await
        .unwrap();

    let kms1 = Arc::new(builder(&first, &endpoint).build().await.unwrap());
    let store1 = Arc::new(MemoryKeyStore::new());
    let keys1 = KeyHierarchy::new(kms1.clone(), store1.clone());
    let derived = write_rows(&keys1, &USER, 3, 12).await;
    let per_row = write_rows(&keys1, &AUDIT, 2, 4).await;
    let index_key = keys1
        .current_index_key(&rowseal_core::KeyScope::Tenant("tenant-0".into()))
        .await
        .unwrap();

    // Rewrap every stored key and every row's data key under the second key
    // (named by alias: the result must record its ARN).
    let store2 = Arc::new(MemoryKeyStore::new());
    for rec in store1.records() {
        let wrapped = rec.wrapped.as_ref().unwrap();
        let rewrapped = kms1
            .reencrypt_data_key(wrapped, &context_of(&rec), &alias)
            .await
            .unwrap();
        assert_eq!(rewrapped.key_id(), second);
        assert!(store2
            .insert(&KeyRecord {
                wrapped: Some(rewrapped),
                ..rec.clone()
            })
            .await
            .unwrap());
    }
    let mut per_row2 = Vec::new();
    for w in &per_row {
        let header = RowHeader::from_bytes(&w.header).unwrap();
        let ctx = EncryptionContext::row_data_key(AUDIT.record_type(), &w.tenant);
        let rewrapped = kms1
            .reencrypt_data_key(header.wrapped_data_key().unwrap(), &ctx, &alias)
            .await
            .unwrap();
        assert_eq!(rewrapped.key_id(), second);
        per_row2.push(Written {
            header: header.with_wrapped_data_key(rewrapped).unwrap().to_bytes(),
            tenant: w.tenant.clone(),
            email: w.email.clone(),
            plain: w.plain.clone(),
        });
    }
    let c = kms1.call_counts();
    assert_eq!(
        c.reencrypt.calls as usize,
        store1.records().len() + per_row.len()
    );
    assert_eq!(
        c.describe_key.calls, 2,
        "the alias was resolved once, then cached"
    );

    // Disable the first key. moto does not enforce key state on Decrypt, so a
    // proxy enforces it as KMS does: any request naming the first key is
    // answered with DisabledException.
    admin
        .disable_key()
        .key_id(key_id_of(&first))
        .send()
        .await
        .unwrap();
    let proxy = FaultProxy::start(&endpoint).await;
    proxy.fail_if_body_contains(key_id_of(&first), Fault::code("DisabledException"));

    let kms2 = Arc::new(builder(&second, &proxy.url).build().await.unwrap());
    let keys2 = KeyHierarchy::new(kms2.clone(), store2.clone());
    read_rows(&keys2, &USER, &derived).await;
    read_rows(&keys2, &AUDIT, &per_row2).await;
    let index_again = keys2
        .index_key(&rowseal_core::KeyScope::Tenant("tenant-0".into()), 1)
        .await
        .unwrap();
    assert_eq!(
        index_again
            .blind_index_key("user", "email_idx")
            .unwrap()
            .compute(b"x"),
        index_key
            .blind_index_key("user", "email_idx")
            .unwrap()
            .compute(b"x")
    );
    assert!(proxy.faulted().is_empty(), "no request named the first key");
    assert!(proxy.count(Some("Decrypt")) > 0);

    // An old, un-rewrapped key is refused before KMS is asked: the first key
    // is not on the second provider's allow-list.
    let old = store1.records()[0].wrapped.clone().unwrap();
    proxy.reset_log();
    let err = kms2
        .decrypt_data_key(&old, &context_of(&store1.records()[0]))
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyNotAllowed
    );
    assert_eq!(proxy.count(None), 0);
    // And KMS's enforcement is real too: allowed, it fails as disabled.
    let kms3 = builder(&second, &proxy.url)
        .allow_key(&first)
        .build()
        .await
        .unwrap();
    let err = kms3
        .decrypt_data_key(&old, &context_of(&store1.records()[0]))
        .await
        .unwrap_err();
    assert_eq!(provider_error(&err).kind(), ProviderErrorKind::KeyDisabled);
}

#[tokio::test]
async fn derived_mode_10000_rows_10_tenants_cost_at_most_20_kms_calls() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let kms = Arc::new(builder(&arn, &endpoint).build().await.unwrap());
    let at_start = kms.call_counts();
    assert_eq!(at_start.total_requests(), 1, "DescribeKey at build");

    let counting = Arc::new(CountingKeyProvider::new(kms.clone()));
    let store = Arc::new(MemoryKeyStore::new());
    let started = Instant::now();
    let writer = KeyHierarchy::new(counting.clone(), store.clone());
    let rows = write_rows(&writer, &USER, 10, 10_000).await;
    // Read back through a fresh hierarchy: cold caches, as another process.
    let reader = KeyHierarchy::new(counting.clone(), store.clone());
    read_rows(&reader, &USER, &rows).await;
    let elapsed = started.elapsed();

    let c = kms.call_counts();
    let workload_requests = c.total_requests() - at_start.total_requests();
    eprintln!(
        "derived mode, 10,000 rows x 10 tenants written and read back in {elapsed:?}: \
         {} GenerateDataKey + {} Decrypt = {workload_requests} KMS requests \
         (+1 DescribeKey at start-up); core counter: {:?}",
        c.generate_data_key.requests,
        c.decrypt.requests,
        counting.counts()
    );
    assert!(workload_requests <= 20, "{c:?}");
    assert_eq!(c.generate_data_key.requests, 10);
    assert_eq!(c.decrypt.requests, 10);
    assert_eq!(counting.counts().total(), workload_requests);
}

#[tokio::test]
async fn kms_mode_one_generate_data_key_per_row() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let kms = Arc::new(builder(&arn, &endpoint).build().await.unwrap());
    const ROWS: usize = 500;

    let store = Arc::new(MemoryKeyStore::new());
    let started = Instant::now();
    let writer = KeyHierarchy::new(kms.clone(), store.clone());
    let rows = write_rows(&writer, &AUDIT, 5, ROWS).await;
    let written = started.elapsed();
    let c = kms.call_counts();
    assert_eq!(c.generate_data_key.calls, ROWS as u64);
    assert_eq!(c.generate_data_key.requests, ROWS as u64);
    assert_eq!(c.decrypt.calls, 0);

    let reader = KeyHierarchy::new(kms.clone(), store.clone());
    read_rows(&reader, &AUDIT, &rows).await;
    let c = kms.call_counts();
    eprintln!(
        "kms mode, {ROWS} rows: written in {written:?} with {} GenerateDataKey, read back \
         (cold cache) with {} Decrypt, {:?} in all",
        c.generate_data_key.requests,
        c.decrypt.requests,
        started.elapsed()
    );
    assert_eq!(
        c.decrypt.calls, ROWS as u64,
        "one Decrypt per row on a cold cache"
    );
    assert!(store.records().is_empty(), "kms mode stores no tenant key");

    // Reading again through the same hierarchy is served from its cache.
    read_rows(&reader, &AUDIT, &rows).await;
    assert_eq!(kms.call_counts().decrypt.calls, ROWS as u64);
}

#[tokio::test]
async fn build_rejects_missing_and_disabled_keys() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let err = builder("alias/rowseal-test-does-not-exist", &endpoint)
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyNotFound,
        "{err}"
    );

    let arn = create_key(&admin, false).await;
    admin
        .disable_key()
        .key_id(key_id_of(&arn))
        .send()
        .await
        .unwrap();
    let err = builder(&arn, &endpoint).build().await.unwrap_err();
    assert_eq!(
        provider_error(&err).kind(),
        ProviderErrorKind::KeyDisabled,
        "{err}"
    );

    // No region anywhere is a configuration error, raised at build.
    let no_region = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let err = AwsKmsProvider::builder(&arn)
        .sdk_config(no_region)
        .endpoint_url(&endpoint)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, rowseal_core::Error::KeyConfig { .. }),
        "{err}"
    );

    // No credentials: a configuration error, reported at build, not retried.
    let no_credentials = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .build();
    let err = AwsKmsProvider::builder(&arn)
        .sdk_config(no_credentials.clone())
        .endpoint_url(&endpoint)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, rowseal_core::Error::KeyConfig { .. }),
        "{err}"
    );

    // A client without credentials: the signing failure is a configuration
    // error, sent (and failed) once, not retried.
    let conf = aws_sdk_kms::config::Builder::from(&no_credentials)
        .endpoint_url(&endpoint)
        .build();
    let err = AwsKmsProvider::builder(&arn)
        .client(aws_sdk_kms::Client::from_conf(conf))
        .build()
        .await
        .unwrap_err();
    let pe = provider_error(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::Config, "{err}");
    assert_eq!(common::aws_detail(pe).attempts(), 1);
}

#[tokio::test]
async fn user_supplied_client_is_used() {
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let kms = AwsKmsProvider::builder(&arn)
        .client(admin.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(kms.region(), REGION);
    let ctx = EncryptionContext::index_key(None, 1);
    let dk = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(
        kms.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
        dk.plaintext
    );
}
