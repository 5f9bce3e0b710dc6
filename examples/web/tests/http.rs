//! The web example over HTTP: every scenario runs on SQLite with a local key,
//! and on PostgreSQL with a key in the KMS test server.
//!
//! ```text
//! cargo test -p web-example --test http                              # SQLite; PostgreSQL+KMS skipped loudly
//! bash scripts/with-kms-server.sh cargo test -p web-example --test http   # both
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestApp;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

/// Generates `<scenario>::sqlite` and `<scenario>::postgres_kms`.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                #[allow(unused_mut)]
                let mut app = crate::common::sqlite_app().await;
                super::$scenario(&mut app).await;
            }

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
    medical_records,
    bad_input_is_400,
    readme_curl_examples,
    shredded_tenant_is_410,
);

const A: &str = "clinic-a";
const B: &str = "clinic-b";

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
    let r = app
        .call(Method::GET, &format!("/patients/{id}"), Some(A), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json,
        json!({
            "id": id,
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
    let row = &patients[0];
    // The plain columns are there (so the check below can see stored text)...
    assert!(
        contains(row, A.as_bytes()),
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
    assert_eq!(tenant, A);
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

/// Shell words with '...' quoting; a `#` at the start of a word ends the
/// line (the rest is returned as the comment).
fn shell_words(line: &str) -> (Vec<String>, Option<String>) {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut in_word, mut quoted) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if quoted => cur.push(c),
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
    assert!(!quoted, "unclosed quote in {line:?}");
    if in_word {
        words.push(cur);
    }
    (words, None)
}

/// The curl commands of the README's "Try it" block, replayed against the
/// app: each must succeed (2xx) or give the status its comment names, and a
/// `# {...}` line after a command is the answer it must give (fields shown
/// with `…` are not compared).
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
    let mut id: Option<String> = None;
    let mut last: Option<common::Answer> = None;
    let mut replayed = 0;
    for line in &lines {
        let (words, comment) = shell_words(line);
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
        if words[0].starts_with("ID=") {
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
        let path = match &id {
            Some(id) => path.replace("$ID", id),
            None => path.to_owned(),
        };
        let method = match (method.as_deref(), &body) {
            (Some(m), _) => Method::from_bytes(m.as_bytes()).unwrap(),
            (None, Some(_)) => Method::POST,
            (None, None) => Method::GET,
        };
        let answer = app.call_raw(method, &path, tenant.as_deref(), body).await;
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
        if id.is_none() {
            id = answer.json["id"].as_str().map(str::to_owned);
        }
        last = Some(answer);
        replayed += 1;
    }
    assert!(replayed >= 8, "only {replayed} curl commands replayed");
    // The conflict shown in the README happened, and the delete at the end did.
    let r = app
        .call(
            Method::GET,
            &format!("/patients/{}", id.unwrap()),
            Some(A),
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
    let n = app
        .execute(
            "UPDATE rowseal_keys SET wrapped = NULL, state = 'destroyed' WHERE tenant = 'clinic-a'",
        )
        .await;
    assert!(
        n >= 2,
        "{}: tenant and index keys of clinic-a: {n}",
        app.kind
    );
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
}
