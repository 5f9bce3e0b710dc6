//! Audit events and secrecy: every KMS call emits one `tracing` event with
//! the operation, key ARN, region, encryption context and AWS request id; no
//! event, `Debug`, `Display` or error ever shows a data key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::{admin_client, builder, create_key, REGION};
use rowseal_core::{EncryptionContext, KeyProvider};
use rowseal_kms::AUDIT_TARGET;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

/// Records every event (all targets, all levels) as its fields.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<(String, String, Fields)>>>,
    spans: Arc<Mutex<Vec<Fields>>>,
    next_id: Arc<AtomicU64>,
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields::new();
        span.record(&mut Visitor(&mut fields));
        self.spans.lock().unwrap().push(fields);
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut fields = Fields::new();
        values.record(&mut Visitor(&mut fields));
        self.spans.lock().unwrap().push(fields);
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let meta = event.metadata();
        self.events.lock().unwrap().push((
            meta.target().to_owned(),
            meta.level().to_string(),
            fields,
        ));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The ways a key could leak into text.
fn encodings(key: &[u8]) -> Vec<String> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        base64::engine::general_purpose::STANDARD.encode(key),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(key),
        hex.clone(),
        hex.to_uppercase(),
        format!("{key:?}"),
    ]
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} shows key material: {text}"
        );
    }
}

/// The tests of this file one at a time: each captures events with a
/// thread-local subscriber, and tracing caches each callsite's interest
/// process-wide, so a subscriber registered or dropped on another thread
/// while a callsite is first hit can leave an event unseen (it happened in
/// CI: the first two audit events of a run were missing).
static ONE_CAPTURE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sets `capture` as this thread's subscriber, with every callsite's
/// interest recomputed for it.
fn capture_events(capture: &Capture) -> tracing::subscriber::DefaultGuard {
    let default = tracing::subscriber::set_default(capture.clone());
    tracing::callsite::rebuild_interest_cache();
    default
}

// Current-thread runtime: the thread-local subscriber sees everything,
// including the SDK's and hyper's own events.
#[tokio::test(flavor = "current_thread")]
async fn every_call_is_audited_and_no_key_material_shows() {
    let _serial = ONE_CAPTURE_AT_A_TIME.lock().await;
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let second = create_key(&admin, false).await;

    let capture = Capture::default();
    let guard = capture_events(&capture);

    // The second key is allowed: the rewrapped key is read back below.
    let kms = builder(&arn, &endpoint)
        .allow_key(&second)
        .build()
        .await
        .unwrap();
    let ctx = EncryptionContext::row_data_key("patient", "tenant-audit");
    let dk = kms.generate_data_key(&ctx).await.unwrap();
    let key = kms.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap();
    let rewrapped = kms
        .reencrypt_data_key(&dk.wrapped, &ctx, &second)
        .await
        .unwrap();
    let key2 = kms.decrypt_data_key(&rewrapped, &ctx).await.unwrap();
    assert_eq!(key, dk.plaintext);
    assert_eq!(key2, dk.plaintext);
    let wrong = EncryptionContext::row_data_key("patient", "tenant-other");
    let err = kms.decrypt_data_key(&dk.wrapped, &wrong).await.unwrap_err();
    drop(guard);

    let events = capture.events.lock().unwrap().clone();
    let audit: Vec<&(String, String, Fields)> = events
        .iter()
        .filter(|(t, _, _)| t == AUDIT_TARGET)
        .collect();
    let calls: Vec<&Fields> = audit
        .iter()
        .filter(|(_, _, f)| f.get("message").is_some_and(|m| m.starts_with("KMS call")))
        .map(|(_, _, f)| f)
        .collect();
    let ops: Vec<&str> = calls.iter().map(|f| f["operation"].as_str()).collect();
    assert_eq!(
        ops,
        [
            "DescribeKey",
            "GenerateDataKey",
            "Decrypt",
            "DescribeKey", // the ReEncrypt destination, resolved once
            "ReEncrypt",
            "Decrypt",
            "Decrypt"
        ]
    );
    for f in &calls {
        assert!(!f["request_id"].is_empty(), "request id missing: {f:?}");
        assert_eq!(f["region"], REGION);
        assert!(f.contains_key("attempts") && f.contains_key("elapsed_ms"));
    }
    for f in calls.iter().filter(|f| f["operation"] != "DescribeKey") {
        assert!(
            f["encryption_context"].contains("rowseal:purpose=row-data-key")
                && f["encryption_context"].contains("rowseal:record-type=patient")
                && f["encryption_context"].contains("rowseal:tenant=tenant-"),
            "{f:?}"
        );
    }
    assert_eq!(calls[1]["key_arn"], arn);
    assert_eq!(calls[4]["key_arn"], arn);
    assert_eq!(calls[4]["destination_key"], second);
    assert_eq!(calls[5]["key_arn"], second);
    let failed = calls[6];
    assert_eq!(failed["outcome"], "InvalidCiphertext");
    assert_eq!(failed["error_code"], "InvalidCiphertextException");
    assert!(failed["encryption_context"].contains("tenant-other"));
    let levels: Vec<&str> = audit
        .iter()
        .filter(|(_, _, f)| f.get("message").is_some_and(|m| m.starts_with("KMS call")))
        .map(|(_, l, _)| l.as_str())
        .collect();
    assert_eq!(levels[6], "WARN");
    assert!(levels[..6].iter().all(|l| *l == "INFO"));
    // The start-up line shows the allow-list.
    let ready = audit
        .iter()
        .find(|(_, _, f)| {
            f.get("message")
                .is_some_and(|m| m == "KMS key provider ready")
        })
        .map(|(_, _, f)| f)
        .expect("the ready line");
    assert_eq!(ready["key_arn"], arn);
    assert_eq!(ready["allowed_keys"], format!("{:?}", [&arn, &second]));

    // No key material anywhere: events of every target (the SDK's and
    // hyper's included), span fields, Debug and Display.
    let secrets = encodings(dk.plaintext.expose_secret());
    for (target, _, fields) in &events {
        assert_clean(
            &format!("event of {target}"),
            &format!("{fields:?}"),
            &secrets,
        );
    }
    for fields in capture.spans.lock().unwrap().iter() {
        assert_clean("span", &format!("{fields:?}"), &secrets);
    }
    assert_clean("provider Debug", &format!("{kms:?}"), &secrets);
    assert_clean("DataKey Debug", &format!("{dk:?}"), &secrets);
    assert_clean("error Display", &err.to_string(), &secrets);
    assert_clean("error Debug", &format!("{err:?}"), &secrets);
    assert_clean("counts", &format!("{:?}", kms.call_counts()), &secrets);
    eprintln!(
        "{} events captured ({} audit); e.g. {:?}",
        events.len(),
        audit.len(),
        calls[1]
    );
}

/// A wrapped key naming a KMS key off the allow-list is a security event: a
/// `WARN` audit event naming the refused key, and no KMS call.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_key_is_audited_as_a_warning() {
    let _serial = ONE_CAPTURE_AT_A_TIME.lock().await;
    let endpoint = endpoint_or_skip!();
    let admin = admin_client(&endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let other = create_key(&admin, false).await;
    let ctx = EncryptionContext::tenant_key("tenant-audit", 1);
    let foreign = builder(&other, &endpoint)
        .build()
        .await
        .unwrap()
        .generate_data_key(&ctx)
        .await
        .unwrap();
    let kms = builder(&arn, &endpoint).build().await.unwrap();

    let capture = Capture::default();
    let guard = capture_events(&capture);
    let err = kms
        .decrypt_data_key(&foreign.wrapped, &ctx)
        .await
        .unwrap_err();
    let err2 = kms
        .reencrypt_data_key(&foreign.wrapped, &ctx, &arn)
        .await
        .unwrap_err();
    drop(guard);

    let events = capture.events.lock().unwrap().clone();
    let audit: Vec<&(String, String, Fields)> = events
        .iter()
        .filter(|(t, _, _)| t == AUDIT_TARGET)
        .collect();
    assert_eq!(audit.len(), 2, "{audit:?}");
    for ((_, level, f), op) in audit.iter().zip(["Decrypt", "ReEncrypt"]) {
        assert_eq!(level, "WARN");
        assert_eq!(f["operation"], op);
        assert_eq!(f["key_arn"], other);
        assert_eq!(f["outcome"], "KeyNotAllowed");
        assert_eq!(f["allowed_keys"], format!("{:?}", [&arn]));
        assert!(f["encryption_context"].contains("rowseal:tenant=tenant-audit"));
        assert!(f["message"].contains("allow-list"), "{f:?}");
    }
    for e in [&err, &err2] {
        let text = e.to_string();
        assert!(
            text.contains(&other) && text.contains("allow-list"),
            "{text}"
        );
    }
    assert_clean(
        "refusal",
        &format!("{events:?} {err:?}"),
        &encodings(foreign.plaintext.expose_secret()),
    );
    let c = kms.call_counts();
    assert_eq!(c.total_requests(), 1, "only the DescribeKey of the build");
}
