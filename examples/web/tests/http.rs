//! The web example over HTTP: every scenario runs on SQLite with a local key,
//! and on PostgreSQL with a key in the KMS test server.
//!
//! ```text
//! cargo test -p web-example --test http                              # SQLite; PostgreSQL+KMS skipped loudly
//! bash scripts/with-kms-server.sh cargo test -p web-example --test http   # both
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Built without any database (`--no-default-features`), no scenario runs.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused_imports)
)]

mod common;

use std::collections::HashMap;

use common::TestApp;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

/// Generates `<scenario>::sqlite` and `<scenario>::postgres_kms` (each in
/// a build with that database's queries: the default features).
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[cfg(feature = "sqlite")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                #[allow(unused_mut)]
                let mut app = crate::common::sqlite_app().await;
                super::$scenario(&mut app).await;
            }

            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_kms() {
                #[allow(unused_mut)]
                let Some(mut app) = crate::common::postgres_kms_app().await else {
                    return;
                };
                super::$scenario(&mut app).await;
            }
        }
    )*};
}

on_both!(
    create_then_get_round_trips,
    tenants_are_isolated,
    lookups_by_email_and_ssn,
    duplicate_email_is_a_conflict_without_the_value,
    stored_rows_hold_no_plaintext,
    update_then_delete,
    patch_changes_only_the_fields_given,
    medical_records,
    bad_input_is_400,
    readme_curl_examples,
    shredded_tenant_is_410,
    list_patients_with_limit,
    latest_records_with_patient_names,
    a_row_moved_to_another_tenant_fails_closed,
    sealed_rows_open_for_their_own_tenant_only,
);

/// Two clinics (tenants are UUIDs; `X-Tenant-Id` carries them).
const A: &str = "3f0c2b1e-8c4d-4f6a-9e21-7a5b0c9d1e2f";
const B: &str = "b7d41e0a-5c2f-4e89-a3b6-0f9e8d7c6b5a";

/// A tenant UUID's 16 bytes, as rowseal stores UUID columns.
fn uuid_bytes(id: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(id).unwrap().as_bytes()
}

fn ada() -> Value {
    json!({
        "name": "Ada Lovelace",
        "email": "Ada.Lovelace@Example.com",
        "ssn": "123-45-6789",
        "birth_date": "1815-12-10",
    })
}

fn alan() -> Value {
    json!({"name": "Alan Turing", "email": "alan@example.com"})
}

async fn create(app: &TestApp, tenant: &str, body: &Value) -> String {
    let r = app
        .call(Method::POST, "/patients", Some(tenant), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}: {}", app.kind, r.text);
    r.json["id"].as_str().unwrap().to_owned()
}

async fn search(app: &TestApp, tenant: &str, body: Value) -> Vec<String> {
    let r = app
        .call(Method::POST, "/patients/search", Some(tenant), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}: {}", app.kind, r.text);
    let mut ids: Vec<String> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn create_then_get_round_trips(app: &TestApp) {
    // 1850 is the earliest accepted birth date: Ada's real one is refused.
    let r = app
        .call(Method::POST, "/patients", Some(A), Some(&ada()))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!r.text.contains("1815"), "{}", r.text);
    let body = ada_born_1990();
    let r = app
        .call(Method::POST, "/patients", Some(A), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let created_at = r.json["created_at"].as_str().unwrap().to_owned();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&created_at).is_ok(),
        "{created_at}"
    );
    let r = app
        .call(Method::GET, &format!("/patients/{id}"), Some(A), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json,
        json!({
            "id": id,
            "created_at": created_at,
            "name": "Ada Lovelace",
            "email": "Ada.Lovelace@Example.com",
            "ssn": "123-45-6789",
            "birth_date": "1990-02-28",
        })
    );
    // Optional fields stay absent (NULL, not encrypted empties).
    let id = create(app, A, &alan()).await;
    let r = app
        .call(Method::GET, &format!("/patients/{id}"), Some(A), None)
        .await;
    assert_eq!(r.json["ssn"], Value::Null);
    assert_eq!(r.json["birth_date"], Value::Null);
    assert_eq!(r.json["name"], "Alan Turing");
}

async fn tenants_are_isolated(app: &TestApp) {
    let body = ada_born_1990();
    let id = create(app, A, &body).await;
    let path = format!("/patients/{id}");
    // Tenant B sees nothing of A's patient: not by id, not by lookup, and it
    // cannot change, delete or add records to it.
    let r = app.call(Method::GET, &path, Some(B), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(!r.text.contains("Ada"), "{}", r.text);
    assert!(search(app, B, json!({"email": "ada.lovelace@example.com"}))
        .await
        .is_empty());
    assert!(search(app, B, json!({"ssn": "123456789"})).await.is_empty());
    let r = app.call(Method::PUT, &path, Some(B), Some(&alan())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app.call(Method::DELETE, &path, Some(B), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let rec = json!({"note": "B's note"});
    let r = app
        .call(
            Method::POST,
            &format!("{path}/records"),
            Some(B),
            Some(&rec),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app
        .call(Method::GET, &format!("{path}/records"), Some(B), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // The same e-mail in tenant B is another patient (uniqueness is per
    // tenant), and A's patient is unchanged.
    let other = create(app, B, &body).await;
    assert_ne!(other, id);
    assert_eq!(
        search(app, B, json!({"email": "ada.lovelace@example.com"})).await,
        vec![other]
    );
    let r = app.call(Method::GET, &path, Some(A), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"], "Ada Lovelace");
    assert_eq!(
        search(app, A, json!({"email": "ada.lovelace@example.com"})).await,
        vec![id]
    );
    // The tenant is the UUID, however it is written: upper case or without
    // hyphens is the same clinic.
    for written in [A.to_uppercase(), A.replace('-', "")] {
        let r = app.call(Method::GET, &path, Some(&written), None).await;
        assert_eq!(r.status, StatusCode::OK, "{written}: {}", r.text);
        assert_eq!(r.json["name"], "Ada Lovelace");
    }
}

async fn lookups_by_email_and_ssn(app: &TestApp) {
    let body = ada_born_1990();
    let ada = create(app, A, &body).await;
    let alan = create(
        app,
        A,
        &json!({
            "name": "Alan Turing", "email": "alan@example.com", "ssn": "987 65 4321",
        }),
    )
    .await;
    for email in [
        "Ada.Lovelace@Example.com",
        "ada.lovelace@example.com",
        "  ADA.LOVELACE@EXAMPLE.COM ",
        "\tada.lovelace@example.COM",
    ] {
        assert_eq!(
            search(app, A, json!({"email": email})).await,
            vec![ada.clone()],
            "{}: email {email:?}",
            app.kind
        );
    }
    assert!(search(app, A, json!({"email": "ada@example.com"}))
        .await
        .is_empty());
    for ssn in ["123-45-6789", "123456789", " 123 45 6789 "] {
        assert_eq!(
            search(app, A, json!({"ssn": ssn})).await,
            vec![ada.clone()],
            "ssn {ssn:?}"
        );
    }
    assert_eq!(
        search(app, A, json!({"ssn": "987-65-4321"})).await,
        vec![alan]
    );
    assert!(search(app, A, json!({"ssn": "111-22-3333"}))
        .await
        .is_empty());
    // The answer carries the decrypted patient.
    let r = app
        .call(
            Method::POST,
            "/patients/search",
            Some(A),
            Some(&json!({"ssn": "123456789"})),
        )
        .await;
    assert_eq!(r.json[0]["name"], "Ada Lovelace");
    assert_eq!(r.json[0]["email"], "Ada.Lovelace@Example.com");
}

async fn duplicate_email_is_a_conflict_without_the_value(app: &TestApp) {
    create(app, A, &alan()).await;
    let dup = json!({"name": "Someone Else", "email": "  ALAN@example.com", "ssn": "555-12-0000"});
    let r = app
        .call(Method::POST, "/patients", Some(A), Some(&dup))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"], "conflict");
    assert_eq!(r.json["field"], "email");
    for secret in ["alan@", "ALAN@", "Someone", "555", "email_idx"] {
        assert!(
            !r.text.contains(secret),
            "conflict body leaks {secret:?}: {}",
            r.text
        );
    }
    // Nothing was written: one Alan, no Someone.
    assert_eq!(
        search(app, A, json!({"email": "alan@example.com"}))
            .await
            .len(),
        1
    );
    assert!(search(app, A, json!({"ssn": "555120000"})).await.is_empty());
    // An update onto a taken e-mail is a conflict too.
    let other = create(
        app,
        A,
        &json!({"name": "Grace Hopper", "email": "grace@example.com"}),
    )
    .await;
    let r = app
        .call(
            Method::PUT,
            &format!("/patients/{other}"),
            Some(A),
            Some(&json!({"name": "Grace Hopper", "email": "Alan@Example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(!r.text.to_lowercase().contains("alan"), "{}", r.text);
}

/// A needle is found in the haystack, as raw bytes.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn stored_rows_hold_no_plaintext(app: &TestApp) {
    let body = ada_born_1990();
    let id = create(app, A, &body).await;
    let r = app
        .call(
            Method::POST,
            &format!("/patients/{id}/records"),
            Some(A),
            Some(&json!({"note": "Complains of analytical engine fatigue", "diagnosis_code": "Z73.0"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let patients = app.stored_bytes("patients").await;
    assert_eq!(patients.len(), 1);
    assert!(!contains(&patients[0], A.as_bytes()), "{}", app.kind);
    let row = &patients[0];
    // The plain columns are there (so the check below can see stored
    // bytes): the tenant, a UUID, as its 16 bytes...
    assert!(
        contains(row, &uuid_bytes(A)),
        "{}: tenant column not found",
        app.kind
    );
    // ...and no value, in any form the app or the index normalization uses.
    for secret in [
        "Ada Lovelace",
        "Lovelace",
        "Ada.Lovelace@Example.com",
        "ada.lovelace@example.com",
        "Lovelace@",
        "123-45-6789",
        "123456789",
        "1990-02-28",
    ] {
        assert!(
            !contains(row, secret.as_bytes()),
            "{}: patients row holds {secret:?}",
            app.kind
        );
    }
    let records = app.stored_bytes("medical_records").await;
    assert_eq!(records.len(), 1);
    for secret in ["analytical engine", "fatigue", "Z73.0"] {
        assert!(
            !contains(&records[0], secret.as_bytes()),
            "{}: record holds {secret:?}",
            app.kind
        );
    }
    // rowseal's key table holds wrapped keys only: no tenant or index key in
    // the clear can be recognised, but at least no value is there either.
    for row in app.stored_bytes("rowseal_keys").await {
        assert!(!contains(&row, b"Lovelace"));
    }
}

/// `PATCH` (`Encryptor::update_fields`): only the fields given change, the
/// others read back as they were (the encrypted ones re-sealed with them),
/// `null` clears an optional field, the blind indexes follow, and a body
/// that changes nothing or names an unknown field is 400.
async fn patch_changes_only_the_fields_given(app: &TestApp) {
    let id = create(app, A, &ada_born_1990()).await;
    let path = format!("/patients/{id}");
    let before = app.call(Method::GET, &path, Some(A), None).await;

    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(A),
            Some(&json!({"email": "countess@lovelace.example", "ssn": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["email"], "countess@lovelace.example");
    assert_eq!(r.json["ssn"], Value::Null);
    for kept in ["name", "birth_date", "created_at", "id"] {
        assert_eq!(r.json[kept], before.json[kept], "{kept}");
    }
    let r = app.call(Method::GET, &path, Some(A), None).await;
    assert_eq!(r.json["email"], "countess@lovelace.example");
    assert_eq!(r.json["name"], before.json["name"]);
    assert_eq!(r.json["birth_date"], "1990-02-28");
    assert!(search(app, A, json!({"email": "ada.lovelace@example.com"}))
        .await
        .is_empty());
    assert!(search(app, A, json!({"ssn": "123456789"})).await.is_empty());
    assert_eq!(
        search(app, A, json!({"email": "COUNTESS@lovelace.example"})).await,
        vec![id.clone()]
    );

    for (body, what) in [
        (json!({}), "nothing to change"),
        (json!({"nickname": "Ada"}), "an unknown field"),
        (json!({"email": "not an e-mail"}), "an invalid value"),
    ] {
        let r = app.call(Method::PATCH, &path, Some(A), Some(&body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    }
    // Another clinic's row, or none: 404.
    let r = app
        .call(Method::PATCH, &path, Some(B), Some(&json!({"name": "X"})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

async fn update_then_delete(app: &TestApp) {
    let body = ada_born_1990();
    let id = create(app, A, &body).await;
    let path = format!("/patients/{id}");
    let r = app
        .call(
            Method::POST,
            &format!("{path}/records"),
            Some(A),
            Some(&json!({"note": "first visit"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let changed = json!({
        "name": "Augusta Ada King",
        "email": "countess@lovelace.example",
        "ssn": "111-22-3333",
    });
    let r = app.call(Method::PUT, &path, Some(A), Some(&changed)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.call(Method::GET, &path, Some(A), None).await;
    assert_eq!(r.json["name"], "Augusta Ada King");
    assert_eq!(r.json["email"], "countess@lovelace.example");
    assert_eq!(r.json["ssn"], "111-22-3333");
    assert_eq!(r.json["birth_date"], Value::Null);
    // The indexes follow the update: old values find nothing, new ones find it.
    assert!(search(app, A, json!({"email": "ada.lovelace@example.com"}))
        .await
        .is_empty());
    assert!(search(app, A, json!({"ssn": "123456789"})).await.is_empty());
    assert_eq!(
        search(app, A, json!({"email": "COUNTESS@lovelace.example"})).await,
        vec![id.clone()]
    );
    assert_eq!(
        search(app, A, json!({"ssn": "111223333"})).await,
        vec![id.clone()]
    );
    // The freed e-mail can be used again.
    create(
        app,
        A,
        &json!({"name": "Ada II", "email": "ada.lovelace@example.com"}),
    )
    .await;

    let r = app.call(Method::DELETE, &path, Some(A), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = app.call(Method::GET, &path, Some(A), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(search(app, A, json!({"ssn": "111223333"})).await.is_empty());
    let r = app.call(Method::DELETE, &path, Some(A), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.call(Method::PUT, &path, Some(A), Some(&changed)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Its records went with it.
    assert!(app.stored_bytes("medical_records").await.is_empty());
}

async fn medical_records(app: &TestApp) {
    let ada = create(app, A, &json!({"name": "Ada", "email": "ada@example.com"})).await;
    let alan = create(app, A, &alan()).await;
    for (who, note, code) in [
        (&ada, "first visit", Some("Z00.0")),
        (&alan, "alan's visit", None),
        (&ada, "second visit", None),
    ] {
        let mut body = json!({"note": note});
        if let Some(c) = code {
            body["diagnosis_code"] = json!(c);
        }
        let r = app
            .call(
                Method::POST,
                &format!("/patients/{who}/records"),
                Some(A),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["patient_id"], who.as_str());
        assert_eq!(r.json["note"], note);
    }
    let r = app
        .call(
            Method::GET,
            &format!("/patients/{ada}/records"),
            Some(A),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let notes: Vec<&str> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["note"].as_str().unwrap())
        .collect();
    assert_eq!(notes, ["first visit", "second visit"]);
    assert_eq!(r.json[0]["diagnosis_code"], "Z00.0");
    assert_eq!(r.json[1]["diagnosis_code"], Value::Null);
    let missing = "00000000-0000-4000-8000-000000000000";
    let r = app
        .call(
            Method::GET,
            &format!("/patients/{missing}/records"),
            Some(A),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// `GET path` as `tenant`: 200 and a JSON array.
async fn list(app: &TestApp, path: &str, tenant: &str) -> Vec<Value> {
    let r = app.call(Method::GET, path, Some(tenant), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {path}: {}", app.kind, r.text);
    r.json.as_array().unwrap().clone()
}

/// The next write gets a later millisecond (lists order by the time).
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(3));
}

fn field<'a>(items: &'a [Value], name: &str) -> Vec<&'a str> {
    items.iter().map(|x| x[name].as_str().unwrap()).collect()
}

async fn list_patients_with_limit(app: &TestApp) {
    assert!(list(app, "/patients", A).await.is_empty());
    let names = [
        "Ada Lovelace",
        "Alan Turing",
        "Grace Hopper",
        "Edsger Dijkstra",
    ];
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let email = format!("p{i}@example.com");
        ids.push(
            create(
                app,
                A,
                &json!({"name": name, "email": email, "ssn": "123-45-6789"}),
            )
            .await,
        );
        tick();
        if i == 1 {
            // Another clinic's patients, written in between.
            create(
                app,
                B,
                &json!({"name": "Barbara Liskov", "email": "barbara@example.com"}),
            )
            .await;
            tick();
        }
    }
    // A's patients, decrypted, in the order they were registered; none of
    // B's, not even in the raw answer.
    let r = app.call(Method::GET, "/patients", Some(A), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {}", app.kind, r.text);
    assert!(!r.text.contains("Barbara"), "{}: {}", app.kind, r.text);
    let all = r.json.as_array().unwrap().clone();
    assert_eq!(field(&all, "name"), names, "{}", app.kind);
    assert_eq!(field(&all, "id"), ids, "{}", app.kind);
    assert_eq!(all[0]["email"], "p0@example.com");
    assert_eq!(all[0]["ssn"], "123-45-6789");
    let times = field(&all, "created_at");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    // The limit: the first N of the same order.
    for n in [1, 2, 3] {
        let some = list(app, &format!("/patients?limit={n}"), A).await;
        assert_eq!(some, all[..n], "{}: limit={n}", app.kind);
    }
    assert_eq!(list(app, "/patients?limit=500", A).await, all);
    // B sees its own patient only; a clinic with none sees nothing.
    let theirs = list(app, "/patients", B).await;
    assert_eq!(field(&theirs, "name"), ["Barbara Liskov"], "{}", app.kind);
    assert!(theirs
        .iter()
        .all(|p| !ids.contains(&p["id"].as_str().unwrap().to_owned())));
    let nobody = "00000000-0000-4000-8000-00000000000c";
    assert!(list(app, "/patients", nobody).await.is_empty());
    // A deleted patient leaves the list.
    let r = app
        .call(
            Method::DELETE,
            &format!("/patients/{}", ids[1]),
            Some(A),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        field(&list(app, "/patients?limit=2", A).await, "name"),
        ["Ada Lovelace", "Grace Hopper"]
    );
    // An update keeps the registration time (and so the place in the list).
    let r = app
        .call(
            Method::PUT,
            &format!("/patients/{}", ids[0]),
            Some(A),
            Some(&json!({"name": "Augusta Ada King", "email": "p0@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["created_at"], all[0]["created_at"]);
    let now = list(app, "/patients?limit=1", A).await;
    assert_eq!(now[0]["name"], "Augusta Ada King");
    assert_eq!(now[0]["created_at"], all[0]["created_at"]);
}

async fn latest_records_with_patient_names(app: &TestApp) {
    assert!(list(app, "/records", A).await.is_empty());
    let ada = create(
        app,
        A,
        &json!({"name": "Ada Lovelace", "email": "ada@example.com"}),
    )
    .await;
    let alan = create(app, A, &alan()).await;
    let barbara = create(
        app,
        B,
        &json!({"name": "Barbara Liskov", "email": "barbara@example.com"}),
    )
    .await;
    for (tenant, who, note, code) in [
        (A, &ada, "first visit", Some("Z00.0")),
        (B, &barbara, "B's visit", Some("J45")),
        (A, &alan, "alan's visit", None),
        (A, &ada, "second visit", None),
    ] {
        let mut body = json!({"note": note});
        if let Some(c) = code {
            body["diagnosis_code"] = json!(c);
        }
        let r = app
            .call(
                Method::POST,
                &format!("/patients/{who}/records"),
                Some(tenant),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        tick();
    }
    // A's records, newest first, each with its patient's name; nothing of
    // B's, not even in the raw answer.
    let r = app.call(Method::GET, "/records", Some(A), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {}", app.kind, r.text);
    for theirs in ["B's visit", "Barbara", "J45"] {
        assert!(!r.text.contains(theirs), "{}: {}", app.kind, r.text);
    }
    let all = r.json.as_array().unwrap().clone();
    assert_eq!(
        field(&all, "note"),
        ["second visit", "alan's visit", "first visit"],
        "{}",
        app.kind
    );
    assert_eq!(
        field(&all, "patient_name"),
        ["Ada Lovelace", "Alan Turing", "Ada Lovelace"]
    );
    assert_eq!(
        field(&all, "patient_id"),
        [ada.as_str(), alan.as_str(), ada.as_str()]
    );
    assert_eq!(all[2]["diagnosis_code"], "Z00.0");
    assert_eq!(all[0]["diagnosis_code"], Value::Null);
    // The same record as the per-patient list gives, plus the name.
    let of_ada = list(app, &format!("/patients/{ada}/records"), A).await;
    let mut first = all[2].clone();
    first.as_object_mut().unwrap().remove("patient_name");
    assert_eq!(first, of_ada[0]);
    // The limit: the newest N.
    for n in [1, 2] {
        let some = list(app, &format!("/records?limit={n}"), A).await;
        assert_eq!(some, all[..n], "{}: limit={n}", app.kind);
    }
    // B's clinic sees its own record only.
    let theirs = list(app, "/records", B).await;
    assert_eq!(field(&theirs, "note"), ["B's visit"], "{}", app.kind);
    assert_eq!(field(&theirs, "patient_name"), ["Barbara Liskov"]);
    // A patient's deletion takes its records out of the join.
    let r = app
        .call(Method::DELETE, &format!("/patients/{ada}"), Some(A), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        field(&list(app, "/records", A).await, "note"),
        ["alan's visit"]
    );
}

/// Someone with write access to the database moves a row of clinic B into
/// clinic A (rewrites its tenant column): A's queries now select it, but
/// its ciphertexts are bound to B, so it does not open under A's keys. The
/// list fails closed (500) and shows nothing of it, nor of A's own rows.
async fn a_row_moved_to_another_tenant_fails_closed(app: &TestApp) {
    create(app, A, &ada_born_1990()).await;
    let grace = create(
        app,
        B,
        &json!({"name": "Grace Hopper", "email": "grace@example.com", "ssn": "555-12-0000"}),
    )
    .await;
    let hex = |id: &str| uuid::Uuid::parse_str(id).unwrap().simple().to_string();
    let sql = if app.kind.starts_with("sqlite") {
        format!(
            "UPDATE patients SET tenant_id = X'{}' WHERE id = X'{}'",
            hex(A),
            hex(&grace)
        )
    } else {
        format!("UPDATE patients SET tenant_id = '{A}' WHERE id = '{grace}'")
    };
    assert_eq!(app.execute(&sql).await, 1, "{}", app.kind);
    for path in ["/patients".to_owned(), format!("/patients/{grace}")] {
        let r = app.call(Method::GET, &path, Some(A), None).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}: {path}: {}",
            app.kind,
            r.text
        );
        assert_eq!(r.json["error"], "internal");
        for secret in ["Grace", "grace@", "555", "Ada"] {
            assert!(!r.text.contains(secret), "{}: {}", app.kind, r.text);
        }
    }
    // B no longer selects it.
    assert!(list(app, "/patients", B).await.is_empty());
}

/// The app's own queries, called directly, with the tenant condition
/// pointing at clinic B while the caller is clinic A (what a query that
/// forgot or botched its `WHERE tenant_id = ...` would return): `open_all`
/// refuses B's sealed rows for A by name, patients and joined rows alike,
/// and opens them for B.
async fn sealed_rows_open_for_their_own_tenant_only(app: &TestApp) {
    use rowseal::Error;
    use web_example::queries;
    let grace = create(
        app,
        B,
        &json!({"name": "Grace Hopper", "email": "grace@example.com"}),
    )
    .await;
    let r = app
        .call(
            Method::POST,
            &format!("/patients/{grace}/records"),
            Some(B),
            Some(&json!({"note": "B's visit"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let st = app.state().await;
    let b = uuid::Uuid::parse_str(B).unwrap();
    let patients = queries::patients(&st.db, b, 50).await.unwrap();
    assert_eq!(patients.len(), 1);
    assert!(matches!(
        st.rowseal.open_all(patients, A).await,
        Err(Error::TenantMismatch { .. })
    ));
    let records = queries::records_of_patient(&st.db, b, grace.parse().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        st.rowseal.open_all(records, A).await,
        Err(Error::TenantMismatch { .. })
    ));
    let joined = queries::records_with_patients(&st.db, b, 50).await.unwrap();
    assert_eq!(joined.len(), 1);
    let (record, patient) = joined.into_iter().next().unwrap().split();
    let (record2, patient2) = queries::records_with_patients(&st.db, b, 50)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
        .split();
    assert!(matches!(
        st.rowseal.open(record, A).await,
        Err(Error::TenantMismatch { .. })
    ));
    assert!(matches!(
        st.rowseal.open(patient, A).await,
        Err(Error::TenantMismatch { .. })
    ));
    // For B they open.
    assert_eq!(st.rowseal.open(record2, B).await.unwrap().note, "B's visit");
    assert_eq!(
        st.rowseal.open(patient2, B).await.unwrap().name,
        "Grace Hopper"
    );
}

async fn bad_input_is_400(app: &TestApp) {
    let id = create(app, A, &alan()).await;
    let cases: Vec<(Method, String, Option<&str>, Option<String>)> = vec![
        // No tenant, an invalid tenant.
        (
            Method::POST,
            "/patients".into(),
            None,
            Some(alan().to_string()),
        ),
        (Method::GET, format!("/patients/{id}"), None, None),
        (
            Method::GET,
            format!("/patients/{id}"),
            Some("clinic a"),
            None,
        ),
        (
            Method::GET,
            format!("/patients/{id}"),
            Some(&"x"[..0]),
            None,
        ),
        // Tenants are UUIDs: an identifier that is not one is refused.
        (
            Method::GET,
            format!("/patients/{id}"),
            Some("clinic-a"),
            None,
        ),
        (Method::GET, "/patients".into(), Some("not-a-uuid"), None),
        (Method::GET, "/records".into(), Some(&A[..35]), None),
        (Method::GET, "/records".into(), None, None),
        // List limits: 1 to 5,000, and no other parameter.
        (Method::GET, "/patients?limit=0".into(), Some(A), None),
        (Method::GET, "/patients?limit=5001".into(), Some(A), None),
        (Method::GET, "/patients?limit=DROP".into(), Some(A), None),
        (Method::GET, "/patients?limit=".into(), Some(A), None),
        (
            Method::GET,
            "/patients?limit=1&limit=2".into(),
            Some(A),
            None,
        ),
        (Method::GET, "/patients?offset=2".into(), Some(A), None),
        (Method::GET, "/records?limit=-1".into(), Some(A), None),
        // Not JSON, wrong shape, unknown field, wrong types.
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some("{not json".into()),
        ),
        (Method::POST, "/patients".into(), Some(A), Some("[]".into())),
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some(json!({"name": "X", "email": "x@example.com", "password": "hunter2"}).to_string()),
        ),
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some(json!({"name": "X", "email": 4242424242_u64}).to_string()),
        ),
        // Invalid values.
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some(json!({"name": "X", "email": "not-an-email"}).to_string()),
        ),
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some(json!({"name": " ", "email": "x@example.com"}).to_string()),
        ),
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some(json!({"name": "X", "email": "x@example.com", "ssn": "12-34"}).to_string()),
        ),
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some(
                json!({"name": "X", "email": "x@example.com", "birth_date": "10/12/1815"})
                    .to_string(),
            ),
        ),
        (
            Method::POST,
            "/patients".into(),
            Some(A),
            Some(
                json!({"name": "X", "email": "x@example.com", "birth_date": "2999-01-01"})
                    .to_string(),
            ),
        ),
        // Ids that are not UUIDs.
        (Method::GET, "/patients/42".into(), Some(A), None),
        (Method::DELETE, "/patients/not-a-uuid".into(), Some(A), None),
        // Searches: none or both keys, invalid values.
        (
            Method::POST,
            "/patients/search".into(),
            Some(A),
            Some("{}".into()),
        ),
        (
            Method::POST,
            "/patients/search".into(),
            Some(A),
            Some(json!({"email": "alan@example.com", "ssn": "123456789"}).to_string()),
        ),
        (
            Method::POST,
            "/patients/search".into(),
            Some(A),
            Some(json!({"ssn": "not an ssn"}).to_string()),
        ),
        // Records.
        (
            Method::POST,
            format!("/patients/{id}/records"),
            Some(A),
            Some(json!({"note": ""}).to_string()),
        ),
        (
            Method::POST,
            format!("/patients/{id}/records"),
            Some(A),
            Some(json!({"note": "x", "diagnosis_code": "DROP TABLE"}).to_string()),
        ),
    ];
    for (method, path, tenant, body) in cases {
        let shown = format!("{method} {path} tenant={tenant:?} body={body:?}");
        let r = app.call_raw(method, &path, tenant, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{}: {shown}: {}",
            app.kind,
            r.text
        );
        assert_eq!(r.json["error"], "bad_request", "{shown}: {}", r.text);
        assert!(r.json["message"].is_string(), "{shown}: {}", r.text);
        // The message says what is expected, never echoes what was sent.
        for echoed in [
            "hunter2",
            "4242",
            "not-an-email",
            "10/12/1815",
            "DROP",
            "not a",
        ] {
            assert!(
                !r.text.contains(echoed),
                "{shown}: body echoes {echoed:?}: {}",
                r.text
            );
        }
    }
    // None of these wrote anything: Alan is still the only patient.
    assert_eq!(app.stored_bytes("patients").await.len(), 1);
    // An unknown route is a JSON 404.
    let r = app.call(Method::GET, "/nothing-here", Some(A), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"], "not_found");
}

/// The README's `sql` block (for `sqlite3 rowseal-web.db`) runs on the
/// SQLite database and shows what it says: the id and the tenant in clear,
/// the rest as envelopes and index values.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_sql_block_runs_on_sqlite() {
    use rowseal::sqlx::Row;
    let app = common::sqlite_app().await;
    let id = create(&app, A, &ada_born_1990()).await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let sql = readme
        .split("```sql\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a sql block in examples/web/README.md");
    let common::RawDb::Sqlite(pool) = &app.raw else {
        unreachable!()
    };
    let rows = rowseal::sqlx::query(sql).fetch_all(pool).await.unwrap();
    assert_eq!(rows.len(), 1);
    let hex_id: String = rows[0].try_get(0).unwrap();
    assert_eq!(hex_id, id.replace('-', "").to_uppercase());
    let tenant: String = rows[0].try_get(1).unwrap();
    assert_eq!(tenant, A.replace('-', "").to_uppercase());
    let name_len: i64 = rows[0].try_get(2).unwrap();
    assert!(name_len > "Ada Lovelace".len() as i64 + 16, "{name_len}");
    let email_idx: i64 = rows[0].try_get(4).unwrap();
    let ssn_idx: i64 = rows[0].try_get(5).unwrap();
    assert!((0..65_536).contains(&ssn_idx), "16-bit index: {ssn_idx}");
    assert_ne!(email_idx, 0);
}

fn ada_born_1990() -> Value {
    let mut body = ada();
    body["birth_date"] = json!("1990-02-28");
    body
}

/// Shell words with '...' and "..." quoting and `$NAME` expansion (outside
/// single quotes; an unknown name stays as written); a `#` at the start of
/// a word ends the line (the rest is returned as the comment).
fn shell_words(line: &str, vars: &HashMap<String, String>) -> (Vec<String>, Option<String>) {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut in_word, mut single, mut double) = (false, false, false);
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if !double => {
                single = !single;
                in_word = true;
            }
            c if single => cur.push(c),
            '"' => {
                double = !double;
                in_word = true;
            }
            '$' => {
                let mut name = String::new();
                while let Some(&(_, n)) = chars.peek() {
                    if !(n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                match vars.get(&name) {
                    Some(value) => cur.push_str(value),
                    None => {
                        cur.push('$');
                        cur.push_str(&name);
                    }
                }
                in_word = true;
            }
            c if double => cur.push(c),
            '#' if !in_word => return (words, Some(line[i + 1..].trim().to_owned())),
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(!single && !double, "unclosed quote in {line:?}");
    if in_word {
        words.push(cur);
    }
    (words, None)
}

/// The curl commands of the README's "Try it" block, replayed against the
/// app: each must succeed (2xx) or give the status its comment names, and a
/// `# {...}` line after a command is the answer it must give (fields shown
/// with `…` are not compared). `NAME=value` lines set shell variables
/// (the clinics' UUIDs), except `ID=`, which is the first answer's id.
async fn readme_curl_examples(app: &TestApp) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("## Try it")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("\n```").next())
        .expect("the README's Try it block");
    // Join continuation lines.
    let mut lines: Vec<String> = Vec::new();
    for l in block.lines() {
        match lines.last_mut() {
            Some(prev) if prev.ends_with('\\') => {
                prev.pop();
                prev.push(' ');
                prev.push_str(l.trim());
            }
            _ => lines.push(l.to_owned()),
        }
    }
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut last: Option<common::Answer> = None;
    let mut replayed = 0;
    for line in &lines {
        let (words, comment) = shell_words(line, &vars);
        if words.is_empty() {
            // A comment line: the previous command's answer.
            if let (Some(c), Some(prev)) = (comment, &last) {
                if let Ok(serde_json::Value::Object(expected)) = serde_json::from_str(&c) {
                    for (k, v) in expected {
                        if v.as_str().is_some_and(|s| s.contains('…')) {
                            continue;
                        }
                        assert_eq!(prev.json[&k], v, "{}: field {k} after {line:?}", app.kind);
                    }
                }
            }
            continue;
        }
        if let Some((name, value)) = words[0].split_once('=') {
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "unexpected assignment in the README: {line}"
            );
            if name != "ID" {
                vars.insert(name.to_owned(), value.to_owned());
            }
            continue;
        }
        assert_eq!(words[0], "curl", "unexpected command in the README: {line}");
        let (mut method, mut url, mut tenant, mut body) = (None, None, None, None);
        let mut it = words[1..].iter();
        while let Some(w) = it.next() {
            match w.as_str() {
                "-s" => {}
                "-X" => method = it.next().cloned(),
                "-H" => {
                    let h = it.next().unwrap();
                    if let Some(t) = h.strip_prefix("X-Tenant-Id: ") {
                        tenant = Some(t.to_owned());
                    }
                }
                "-d" => body = it.next().cloned(),
                "-o" | "-w" => {
                    it.next();
                }
                u if !u.starts_with('-') => url = Some(u.to_owned()),
                other => panic!("curl option {other} not understood by this test"),
            }
        }
        let url = url.expect("a URL");
        let path = url
            .strip_prefix("localhost:3000")
            .expect("localhost:3000 URLs");
        assert!(!path.contains('$'), "unset variable in {line:?}");
        let method = match (method.as_deref(), &body) {
            (Some(m), _) => Method::from_bytes(m.as_bytes()).unwrap(),
            (None, Some(_)) => Method::POST,
            (None, None) => Method::GET,
        };
        let answer = app.call_raw(method, path, tenant.as_deref(), body).await;
        let expected_status = comment
            .as_deref()
            .and_then(|c| c.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        match expected_status {
            Some(code) => assert_eq!(
                answer.status.as_u16(),
                code,
                "{}: {line}: {}",
                app.kind,
                answer.text
            ),
            None => assert!(
                answer.status.is_success(),
                "{}: {line}: {} {}",
                app.kind,
                answer.status,
                answer.text
            ),
        }
        if !vars.contains_key("ID") {
            if let Some(id) = answer.json["id"].as_str() {
                vars.insert("ID".to_owned(), id.to_owned());
            }
        }
        last = Some(answer);
        replayed += 1;
    }
    assert!(replayed >= 12, "only {replayed} curl commands replayed");
    // The delete at the end happened.
    let r = app
        .call(
            Method::GET,
            &format!("/patients/{}", vars["ID"]),
            Some(&vars["CLINIC_A"]),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// After the tenant's keys are destroyed (what `rowseal shred` does to
/// `rowseal_keys`) and the application restarted, its rows answer 410 and
/// nothing of them; other tenants are untouched.
async fn shredded_tenant_is_410(app: &mut TestApp) {
    let a = create(app, A, &ada_born_1990()).await;
    let b = create(app, B, &alan()).await;
    let r = app
        .call(
            Method::POST,
            &format!("/patients/{a}/records"),
            Some(A),
            Some(&json!({"note": "first visit"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The keys are stored under the tenant's canonical id: the UUID in
    // lowercase hyphenated form.
    let n = app
        .execute(&format!(
            "UPDATE rowseal_keys SET wrapped = NULL, state = 'destroyed' WHERE tenant = '{A}'"
        ))
        .await;
    assert!(n >= 2, "{}: tenant and index keys of A: {n}", app.kind);
    app.restart().await;
    let r = app
        .call(Method::GET, &format!("/patients/{a}"), Some(A), None)
        .await;
    assert_eq!(r.status, StatusCode::GONE, "{}: {}", app.kind, r.text);
    assert_eq!(r.json["error"], "gone");
    assert!(
        !r.text.contains("Ada") && !r.text.contains("key"),
        "{}",
        r.text
    );
    let r = app
        .call(
            Method::POST,
            "/patients/search",
            Some(A),
            Some(&json!({"ssn": "123456789"})),
        )
        .await;
    // A lookup finds nothing (a scope whose index key is destroyed has no
    // usable index key: no query, no error).
    assert_eq!(r.status, StatusCode::OK, "{}: {}", app.kind, r.text);
    assert_eq!(r.json, json!([]), "{}", app.kind);
    let r = app
        .call(Method::POST, "/patients", Some(A), Some(&alan()))
        .await;
    assert_eq!(r.status, StatusCode::GONE, "{}: {}", app.kind, r.text);
    let r = app
        .call(Method::GET, &format!("/patients/{b}"), Some(B), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}: {}", app.kind, r.text);
    assert_eq!(r.json["name"], "Alan Turing");
    // The lists: A's answers 410 too, B's is untouched.
    for path in ["/patients", "/records"] {
        let r = app.call(Method::GET, path, Some(A), None).await;
        assert_eq!(
            r.status,
            StatusCode::GONE,
            "{}: {path}: {}",
            app.kind,
            r.text
        );
        assert!(!r.text.contains("Ada"), "{}", r.text);
    }
    let r = app.call(Method::GET, "/patients", Some(B), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {}", app.kind, r.text);
    assert_eq!(r.json[0]["name"], "Alan Turing");
}
