//! Each error kind the web example maps to an HTTP status, produced by a
//! REAL fault and observed over HTTP (issue 15), on PostgreSQL with the root
//! key in the KMS test server (moto) behind a fault-injecting proxy:
//!
//! | fault | kind | answer |
//! |---|---|---|
//! | KMS throttling, `ServiceUnavailableException`, `KMSInternalException` on a cold key cache | `ProviderUnavailable` | 503 `unavailable`, then 200 once KMS answers |
//! | KMS `AccessDeniedException` on a cold key cache | `AccessDenied` | 500 `internal`, no value |
//! | a byte of a stored ciphertext flipped with raw SQL | `Tampered` | 500 `internal`, no value |
//! | another transaction re-seals a row between `PATCH`'s read and its write (the row locked meanwhile, so the interleaving is certain) | `Conflict` | 409 `changed`, nothing written; the retry is 200 |
//! | the `rowseal rotate` tool SIGKILLed while the API updates the same patients (`PUT` and `PATCH`) | (`Conflict` if a write lost a race) | 200 or 409 `changed`, never 500; every patient reads back |
//!
//! The other two kinds are already shown by `tests/http.rs`, on SQLite and on
//! PostgreSQL + KMS: a crypto-shredded tenant (`KeyDestroyed`) is 410 in
//! `shredded_tenant_is_410`, and a unique e-mail collision
//! (`UniqueViolation`) is 409 `conflict` without the value in
//! `duplicate_email_is_a_conflict_without_the_value`.
//!
//! The app's `PUT /patients/{id}` replaces the row with
//! `Encryptor::update` (an unconditional write under the tenant's current
//! key version); `PATCH /patients/{id}` is a read-modify-write with
//! `update_fields`, which loses a race to a write between its read and its
//! write. The rotation race sends both and accepts 409 `changed` (it prints
//! the counts); a lost race is made certain, with a row lock, in
//! `a_patch_that_lost_a_race_is_409_changed`.
//!
//! ```text
//! bash scripts/with-kms-server.sh cargo test -p web-example --test faults
//! ```
//!
//! Without PostgreSQL or the KMS test server each test skips loudly, or
//! fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(not(feature = "postgres"), allow(dead_code, unused_imports))]

mod common;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faults::{self, ProxiedApp};
use common::Answer;
use hyper::{Method, StatusCode};
use rowseal::ErrorKind;
use rowseal_test_support::proxy::Fault;
use serde_json::{json, Value};
use uuid::Uuid;
use web_example::models::Patient;

/// The clinic (tenant) of these tests.
const A: &str = "3f0c2b1e-8c4d-4f6a-9e21-7a5b0c9d1e2f";

/// Ada's values: none of them may ever be in an error body.
const ADA_VALUES: &[&str] = &[
    "Ada",
    "Lovelace",
    "ada.lovelace",
    "123-45-6789",
    "123456789",
    "1990-02-28",
];

fn ada() -> Value {
    json!({
        "name": "Ada Lovelace",
        "email": "Ada.Lovelace@Example.com",
        "ssn": "123-45-6789",
        "birth_date": "1990-02-28",
    })
}

async fn create(f: &ProxiedApp, tenant: &str, body: &Value) -> String {
    let r = f
        .app
        .call(Method::POST, "/patients", Some(tenant), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"].as_str().unwrap().to_owned()
}

async fn get(f: &ProxiedApp, tenant: &str, id: &str) -> Answer {
    f.app
        .call(Method::GET, &format!("/patients/{id}"), Some(tenant), None)
        .await
}

fn assert_no_value(r: &Answer, values: &[&str], what: &str) {
    for v in values {
        assert!(
            !r.text.contains(v),
            "{what}: the body holds {v:?}: {}",
            r.text
        );
    }
}

/// What the library itself says about the same read, on another instance
/// of the app's state (same database, same KMS endpoint: the proxy): the
/// error's kind, proving which kind the HTTP status stands for.
async fn library_kind(f: &ProxiedApp, tenant: &str, id: &str) -> ErrorKind {
    let st = f.app.state().await;
    let web_example::Db::Postgres(pool) = &st.db else {
        unreachable!("a PostgreSQL app")
    };
    let id = Uuid::parse_str(id).unwrap();
    match st.rowseal.fetch::<Patient, _>(pool, tenant, &id).await {
        Ok(_) => panic!("the library read succeeded under the fault"),
        Err(e) => e.kind(),
    }
}

/// KMS throttled or down while the key cache is cold (the app just
/// restarted): 503 `unavailable`, without any value; once KMS answers
/// again, the same request is 200 with the patient.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_unavailable_on_a_cold_cache_is_503_then_200() {
    let Some(mut f) = faults::postgres_kms_app_behind_proxy().await else {
        return;
    };
    let id = create(&f, A, &ada()).await;
    for fault in [
        Fault::throttling(),
        Fault::code("ServiceUnavailableException"),
        Fault::code("KMSInternalException"),
    ] {
        let shown = format!("{fault:?}");
        // A redeploy: the app's key cache is empty, so the read must unwrap
        // the tenant key through KMS.
        f.app.restart().await;
        f.proxy.reset_log();
        f.proxy.fail_always(Some("Decrypt"), fault);
        let r = get(&f, A, &id).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{shown}: {}",
            r.text
        );
        assert_eq!(r.json["error"], "unavailable", "{shown}: {}", r.text);
        assert_no_value(&r, ADA_VALUES, &shown);
        // The fault was hit (and retried: transient errors are), and the
        // list fails the same way.
        let faulted = f.proxy.faulted();
        assert!(
            faulted.len() >= 2 && faulted.iter().all(|(op, _)| op == "Decrypt"),
            "{shown}: {faulted:?}"
        );
        let r = f.app.call(Method::GET, "/patients", Some(A), None).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{shown}: {}",
            r.text
        );
        assert_no_value(&r, ADA_VALUES, &shown);
        assert_eq!(
            library_kind(&f, A, &id).await,
            ErrorKind::ProviderUnavailable,
            "{shown}"
        );

        f.proxy.clear_faults();
        let r = get(&f, A, &id).await;
        assert_eq!(r.status, StatusCode::OK, "{shown}, cleared: {}", r.text);
        assert_eq!(r.json["name"], "Ada Lovelace");
    }
}

/// A new clinic's first write needs a new tenant key from KMS
/// (GenerateDataKey): throttled, it is 503 and nothing is written; once KMS
/// answers, the same request is 201.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_throttled_on_a_first_write_is_503_then_201() {
    let Some(f) = faults::postgres_kms_app_behind_proxy().await else {
        return;
    };
    f.proxy.reset_log();
    f.proxy.fail_always(None, Fault::throttling());
    let r = f
        .app
        .call(Method::POST, "/patients", Some(A), Some(&ada()))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"], "unavailable", "{}", r.text);
    assert_no_value(&r, ADA_VALUES, "first write");
    assert!(!f.proxy.faulted().is_empty());
    assert_eq!(f.scalar("SELECT COUNT(*) FROM patients").await, 0);

    f.proxy.clear_faults();
    let id = create(&f, A, &ada()).await;
    let r = get(&f, A, &id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["email"], "Ada.Lovelace@Example.com");
}

/// KMS refusing the root key (`AccessDeniedException`) on a cold cache:
/// not the client's doing and not retryable, so 500 `internal`, and the
/// body holds no value. Access restored, the same request is 200.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_access_denied_is_500_without_the_value() {
    let Some(mut f) = faults::postgres_kms_app_behind_proxy().await else {
        return;
    };
    let id = create(&f, A, &ada()).await;
    f.app.restart().await;
    f.proxy.reset_log();
    f.proxy
        .fail_always(Some("Decrypt"), Fault::code("AccessDeniedException"));
    let r = get(&f, A, &id).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert_eq!(r.json["error"], "internal", "{}", r.text);
    assert_no_value(&r, ADA_VALUES, "access denied");
    assert!(
        !r.text.contains("AccessDenied") && !r.text.contains(&f.key_arn),
        "{}",
        r.text
    );
    let faulted = f.proxy.faulted();
    assert!(
        !faulted.is_empty()
            && faulted
                .iter()
                .all(|(op, code)| op == "Decrypt" && code == "AccessDeniedException"),
        "{faulted:?}"
    );
    let r = f.app.call(Method::GET, "/patients", Some(A), None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert_no_value(&r, ADA_VALUES, "access denied, list");
    assert_eq!(library_kind(&f, A, &id).await, ErrorKind::AccessDenied);

    f.proxy.clear_faults();
    let r = get(&f, A, &id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "Ada Lovelace");
}

/// One byte of a stored ciphertext flipped with raw SQL: that patient is
/// 500 `internal` without any value (its own or another's), its clinic's
/// list too; another patient still reads. Flipped back, it reads again: the
/// byte was the cause.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_row_is_500_without_the_value() {
    let Some(f) = faults::postgres_kms_app_behind_proxy().await else {
        return;
    };
    let id = create(&f, A, &ada()).await;
    let other = create(
        &f,
        A,
        &json!({"name": "Alan Turing", "email": "alan@example.com"}),
    )
    .await;
    // The last byte of the name's envelope (its authentication tag).
    let flip = format!(
        "UPDATE patients SET name = set_byte(name, length(name) - 1, \
         get_byte(name, length(name) - 1) # 1) WHERE id = '{id}'"
    );
    assert_eq!(f.app.execute(&flip).await, 1);
    let r = get(&f, A, &id).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert_eq!(r.json["error"], "internal", "{}", r.text);
    let mut values = ADA_VALUES.to_vec();
    values.extend(["Alan", "alan@"]);
    assert_no_value(&r, &values, "tampered row");
    let r = f.app.call(Method::GET, "/patients", Some(A), None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert_no_value(&r, &values, "tampered row, list");
    assert_eq!(library_kind(&f, A, &id).await, ErrorKind::Tampered);
    let r = get(&f, A, &other).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "Alan Turing");

    assert_eq!(f.app.execute(&flip).await, 1);
    let r = get(&f, A, &id).await;
    assert_eq!(r.status, StatusCode::OK, "flipped back: {}", r.text);
    assert_eq!(r.json["name"], "Ada Lovelace");
}

/// `PATCH` losing a real race, made certain: another transaction locks the
/// row (`SELECT ... FOR UPDATE`); the app's `update_fields` reads the row
/// (a plain read is not blocked) and its conditional write waits on the
/// lock (seen in `pg_stat_activity`); the transaction then re-seals the row
/// with other values, as another writer or `rowseal rotate` does, and
/// commits. The app's write no longer matches the key header it read:
/// `Conflict`, 409 `changed`, nothing written; the other writer's values
/// stand, and the client's retry is 200.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_lost_a_race_is_409_changed() {
    let Some(f) = faults::postgres_kms_app_behind_proxy().await else {
        return;
    };
    let id = create(&f, A, &ada()).await;
    let uuid = Uuid::parse_str(&id).unwrap();
    let path = format!("/patients/{id}");
    let st = f.app.state().await;
    let web_example::Db::Postgres(pool) = &st.db else {
        unreachable!("a PostgreSQL app")
    };
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM patients WHERE id = $1 FOR UPDATE")
        .bind(uuid)
        .execute(&mut *lock)
        .await
        .unwrap();

    let patch = json!({"email": "ada@new.example"});
    let other_writer = async {
        // Until the app's write waits on the lock (its read is done).
        let deadline = Instant::now() + Duration::from_secs(30);
        while f
            .scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'UPDATE \"patients\"%'",
            )
            .await
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "the app's write never waited on the row lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut theirs = st
            .rowseal
            .fetch::<Patient, _>(&mut lock, A, &uuid)
            .await
            .unwrap()
            .unwrap();
        theirs.name = "Augusta Ada King".into();
        st.rowseal.update(&mut lock, &theirs).await.unwrap();
        lock.commit().await.unwrap();
    };
    let (r, ()) = tokio::join!(
        f.app.call(Method::PATCH, &path, Some(A), Some(&patch)),
        other_writer
    );
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"], "changed", "{}", r.text);
    let mut values = ADA_VALUES.to_vec();
    values.push("ada@new");
    assert_no_value(&r, &values, "a lost race");

    // Nothing of the PATCH was written; the other writer's row stands.
    let now = get(&f, A, &id).await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.text);
    assert_eq!(now.json["name"], "Augusta Ada King");
    assert_eq!(now.json["email"], "Ada.Lovelace@Example.com");

    // The client's retry.
    let r = f
        .app
        .call(Method::PATCH, &path, Some(A), Some(&patch))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["email"], "ada@new.example");
    assert_eq!(r.json["name"], "Augusta Ada King");
}

/// Patients of the rotation race.
const RACE_PATIENTS: usize = 600;
/// Concurrent HTTP updaters, each on its own patients.
const UPDATERS: usize = 4;
/// Patients each updater cycles through.
const UPDATED_EACH: usize = 30;

fn race_name(i: usize, version: usize) -> String {
    format!("Patient {i} v{version}")
}

fn race_email(i: usize) -> String {
    format!("patient{i}@clinic.example")
}

/// What one updater saw.
#[derive(Default)]
struct Updates {
    /// Patient index → the name of its last acknowledged (200) update.
    last: HashMap<usize, String>,
    ok: usize,
    changed: usize,
}

/// The real `rowseal rotate` (a child process, throttled so that it runs a
/// few seconds) re-encrypts a clinic's 600 patients while four HTTP clients
/// update 120 of them, two through `PUT /patients/{id}` (on the old key
/// version, the app's cached current version: each rotated row they update
/// goes back to the old version and the job takes it again) and two
/// through `PATCH` (`update_fields`, on the version the row has, and
/// conditional on its key header: a row the tool re-sealed in between is
/// 409 `changed`). The tool is
/// SIGKILLed by PID mid-way (re-encryptions committed, rows left). Every
/// update answers 200 or 409 `changed`, never anything else; every patient
/// then reads back 200 with its last acknowledged value (or its original
/// one), alone and in the list; the same `rowseal rotate` resumes the
/// killed job and completes it (re-encrypting exactly the rows left),
/// `rowseal verify` finds every row sound, and the values are still there
/// from a cold cache.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_rotation_racing_updates_never_gives_500() {
    let Some(f) = faults::postgres_kms_app_behind_proxy().await else {
        return;
    };
    let cli = faults::build_rowseal().await;
    eprintln!("rowseal tool: {}", cli.display());
    // The clinic's patients, written with the library (the app's own code
    // and key hierarchy, another instance).
    let tenant = Uuid::parse_str(A).unwrap();
    let ids: Vec<Uuid> = (0..RACE_PATIENTS).map(|_| Uuid::new_v4()).collect();
    let patients: Vec<Patient> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Patient {
            id: *id,
            tenant_id: tenant,
            created_at_ms: 1_700_000_000_000 + i as i64,
            name: race_name(i, 0),
            email: race_email(i),
            ssn: None,
            birth_date: None,
        })
        .collect();
    {
        let st = f.app.state().await;
        let web_example::Db::Postgres(pool) = &st.db else {
            unreachable!()
        };
        let n = st.rowseal.insert_many(pool, &patients).await.unwrap();
        assert_eq!(n, RACE_PATIENTS as u64);
    }
    let count_old =
        |target: i64| format!("SELECT COUNT(*) FROM patients WHERE rowseal_key_version < {target}");
    assert_eq!(f.scalar(&count_old(2)).await, RACE_PATIENTS as i64);

    // The app's key cache learns the tenant's current key version (1) from
    // a first update, before the rotation creates version 2: for the cache's
    // lifetime the app writes on version 1, so every row it updates goes
    // back below the rotation's target, and the job keeps coming back to
    // them (the hard case for the tool; the values are the seeded ones).
    let r = f
        .app
        .call(
            Method::PUT,
            &format!("/patients/{}", ids[0]),
            Some(A),
            Some(&json!({"name": race_name(0, 0), "email": race_email(0)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let f = Arc::new(f);
    let rotate = [
        "rotate",
        "--tenant",
        A,
        "--workers",
        "1",
        "--batch-size",
        "10",
        "--max-rows-per-second",
        "100",
    ];
    let mut child = f.rowseal(&rotate).spawn().unwrap();
    let pid = child.id().expect("the rotation's PID");

    // The updaters, from the moment the tool runs until it is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for u in 0..UPDATERS {
        let (f, ids, stop, acknowledged) =
            (f.clone(), ids.clone(), stop.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Updates::default();
            let mut version = 0;
            while !stop.load(Ordering::Relaxed) {
                version += 1;
                let mine = u * UPDATED_EACH..(u + 1) * UPDATED_EACH;
                for (i, id) in mine.clone().zip(&ids[mine]) {
                    let name = race_name(i, version);
                    let (method, body) = if u % 2 == 0 {
                        (Method::PUT, json!({"name": name, "email": race_email(i)}))
                    } else {
                        (Method::PATCH, json!({"name": name}))
                    };
                    let r = f
                        .app
                        .call(method, &format!("/patients/{id}"), Some(A), Some(&body))
                        .await;
                    match r.status {
                        StatusCode::OK => {
                            assert_eq!(r.json["name"], name.as_str(), "{}", r.text);
                            seen.last.insert(i, name);
                            seen.ok += 1;
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        StatusCode::CONFLICT if r.json["error"] == "changed" => {
                            seen.changed += 1;
                        }
                        other => panic!("update of patient {i}: {other}: {}", r.text),
                    }
                }
            }
            seen
        }));
    }

    // Mid-way: the job runs and has re-encrypted some rows, not all.
    let started = Instant::now();
    let at_start = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "rowseal rotate ended before the kill ({status}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let done = f
            .scalar(
                "SELECT COALESCE(MAX(rows_done), -1) FROM rowseal_jobs \
                 WHERE kind = 'rotate' AND state = 'running'",
            )
            .await;
        if done >= 100 {
            break acknowledged.load(Ordering::Relaxed);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the rotation did not get going (rows done: {done})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {pid}");
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(9), "SIGKILLed: {status}");
    let during = acknowledged.load(Ordering::Relaxed) - at_start;
    stop.store(true, Ordering::Relaxed);
    let mut expected: Vec<String> = (0..RACE_PATIENTS).map(|i| race_name(i, 0)).collect();
    let (mut ok, mut changed) = (0, 0);
    for t in tasks {
        let seen = t.await.unwrap();
        ok += seen.ok;
        changed += seen.changed;
        for (i, name) in seen.last {
            expected[i] = name;
        }
    }
    eprintln!(
        "rotation race: {ok} updates 200, {changed} updates 409 changed, \
         {during} acknowledged while the job ran and before the kill"
    );
    assert!(
        during >= 10,
        "only {during} updates raced the running job: no race shown"
    );

    // Killed mid-way: rows on both versions.
    let params: String = rowseal::sqlx::query_scalar(
        "SELECT params FROM rowseal_jobs WHERE kind = 'rotate' AND state = 'running'",
    )
    .fetch_one(f.pool())
    .await
    .unwrap();
    let params: Value = serde_json::from_str(&params).unwrap();
    let target = params["targets"][A]
        .as_i64()
        .unwrap_or_else(|| panic!("the job's target version for {A}: {params}"));
    // Killed mid-way: the job had committed re-encryptions and was still
    // running, with rows left below its target.
    let old = f.scalar(&count_old(target)).await;
    let job_rows = f
        .scalar("SELECT rows_done FROM rowseal_jobs WHERE kind = 'rotate' AND state = 'running'")
        .await;
    eprintln!(
        "killed with {old} of {RACE_PATIENTS} rows below version {target}, \
         {job_rows} re-encryptions committed by the job"
    );
    assert!(
        old > 0 && job_rows >= 100,
        "killed mid-way: {old} rows left, {job_rows} re-encryptions committed"
    );

    // Every patient reads back, alone and in the list, with its last
    // acknowledged value.
    async fn read_back(f: &ProxiedApp, ids: &[Uuid], expected: &[String], when: &str) {
        for (i, id) in ids.iter().enumerate() {
            let r = get(f, A, &id.to_string()).await;
            assert_eq!(r.status, StatusCode::OK, "{when}: patient {i}: {}", r.text);
            assert_eq!(r.json["name"], expected[i].as_str(), "{when}: patient {i}");
            assert_eq!(r.json["email"], race_email(i).as_str(), "{when}");
        }
        let r = f
            .app
            .call(Method::GET, "/patients?limit=5000", Some(A), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{when}: list: {}", r.text);
        let listed = r.json.as_array().unwrap();
        assert_eq!(listed.len(), ids.len(), "{when}");
        for (i, p) in listed.iter().enumerate() {
            // Listed in registration order, the seeding order.
            assert_eq!(p["id"], ids[i].to_string().as_str(), "{when}");
            assert_eq!(p["name"], expected[i].as_str(), "{when}: listed {i}");
        }
    }
    read_back(&f, &ids, &expected, "after the kill").await;

    // The same command resumes the killed job and completes it.
    let run = f.run_rowseal(&rotate[..3]).await;
    assert_eq!(
        run.code,
        Some(0),
        "re-run: {:?}\n{}",
        run.events,
        run.stderr
    );
    let resumed = run.last("resume").expect("the re-run resumed the job");
    let done = run.last("done").expect("a done event");
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(resumed["job"], done["job"]);
    // Nothing wrote meanwhile: the re-run re-encrypted exactly the rows the
    // kill left behind.
    assert_eq!(done["reencrypted"], old, "{done}");
    assert!(run.all("failure").is_empty(), "{:?}", run.events);
    assert_eq!(f.scalar(&count_old(target)).await, 0);
    let verify = f.run_rowseal(&["verify"]).await;
    assert_eq!(
        verify.code,
        Some(0),
        "verify: {:?}\n{}",
        verify.events,
        verify.stderr
    );

    // From a cold cache (the new key version unwrapped through KMS).
    let Ok(mut f) = Arc::try_unwrap(f) else {
        panic!("an updater still holds the app")
    };
    f.app.restart().await;
    read_back(&f, &ids, &expected, "after the rotation").await;
}
