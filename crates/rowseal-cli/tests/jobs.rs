#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `rowseal` binary end to end on SQLite, PostgreSQL and MariaDB:
//! rotate while the application writes, with `kill -9` at random points and
//! resumption; verify; rewrap (cost in keys, not rows); shred; two processes
//! on one job. Sizes scale with `ROWSEAL_TEST_ROWS` (default 3,000 rows
//! across 20 tenants).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Db, Person, Secret};
use rowseal_core::LocalKeyProvider;
use rowseal_sqlx::{Backend, Encryptor};

const TENANTS: i64 = 20;

fn rows() -> i64 {
    std::env::var("ROWSEAL_TEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

fn person(id: i64) -> Person {
    Person {
        id,
        tenant_id: format!("t{}", id % TENANTS),
        name: format!("name-{id}-v0"),
        note: (id % 3 != 0).then(|| format!("note {id}")),
        visits: id,
    }
}

async fn seed<DB: Backend>(db: &Db<DB>, enc: &Encryptor, n: i64)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let people: Vec<Person> = (1..=n).map(person).collect();
    for chunk in people.chunks(1000) {
        enc.insert_many(&db.pool, chunk).await.unwrap();
    }
    let secrets: Vec<Secret> = (1..=40)
        .map(|id| Secret {
            id,
            tenant_id: format!("t{}", id % TENANTS),
            body: format!("secret body {id}"),
        })
        .collect();
    enc.insert_many(&db.pool, &secrets).await.unwrap();
}

/// Application writers: each updates its own rows (`update_fields`, which
/// re-seals the row on its tenant-key version and is conditional on the
/// header: a lost race with the rotation is retried) and inserts new rows. Returns the latest names.
fn start_writers<DB: Backend>(
    db: &Db<DB>,
    enc: Arc<Encryptor>,
    n: i64,
    writers: i64,
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<HashMap<i64, String>>>,
    next_id: Arc<AtomicI64>,
) -> Vec<tokio::task::JoinHandle<u64>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    (0..writers)
        .map(|w| {
            let pool = db.pool.clone();
            let enc = enc.clone();
            let stop = stop.clone();
            let latest = latest.clone();
            let next_id = next_id.clone();
            tokio::spawn(async move {
                let mut writes = 0u64;
                let mut round = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let id = (rand::random::<i64>().rem_euclid(n / writers)) * writers + w;
                    if id < 1 || id > n {
                        continue;
                    }
                    let mut row = person(id);
                    row.name = format!("name-{id}-w{w}-r{round}");
                    let mut ok = false;
                    for _ in 0..50 {
                        match enc.update_fields(&pool, &row, &["name"]).await {
                            Ok(()) => {
                                ok = true;
                                break;
                            }
                            Err(rowseal_sqlx::Error::Conflict { .. }) => continue,
                            Err(e) => panic!("writer update: {e}"),
                        }
                    }
                    assert!(ok, "update never won against the rotation");
                    latest.lock().unwrap().insert(id, row.name.clone());
                    writes += 1;
                    if round % 5 == 0 {
                        // As if the key cache had expired: new rows take
                        // the tenant's newest key version once it exists
                        // (before, they land on the old one and a later
                        // sweep re-encrypts them).
                        enc.keys().forget_cached_keys();
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let row = person(id);
                        enc.insert(&pool, &row).await.unwrap();
                        latest.lock().unwrap().insert(id, row.name.clone());
                        writes += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                writes
            })
        })
        .collect()
}

async fn full_scenario<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n = rows();
    let keyring_v1 = LocalKeyProvider::generate_keyring().to_string();
    let init = common::rowseal(&db.url, &keyring_v1, &["init"]).await;
    assert_eq!(init.code, Some(0), "init: {}", init.stderr);
    common::prepare(&db).await;
    let enc = Arc::new(common::encryptor(&db.pool, &keyring_v1));
    seed(&db, &enc, n).await;

    let status = common::rowseal(&db.url, &keyring_v1, &["status", "--json"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let people = status
        .all("table")
        .into_iter()
        .find(|t| t["table"] == "people")
        .unwrap()
        .clone();
    assert_eq!(people["rows"], n);
    assert_eq!(people["rows_to_rotate"], 0);

    let dry = common::rowseal(
        &db.url,
        &keyring_v1,
        &["rotate", "--all-tenants", "--dry-run"],
    )
    .await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    // The people rows, and the 40 kms-mode secrets (a new data key each).
    assert_eq!(dry.event("dry_run").unwrap()["rows"], n + 40);
    assert_eq!(dry.event("dry_run").unwrap()["kms_mode_rows"], 40);

    // Rotate while 8 writers update and insert; kill -9 five times.
    let stop = Arc::new(AtomicBool::new(false));
    let latest: Arc<Mutex<HashMap<i64, String>>> = Arc::new(Mutex::new(
        (1..=n).map(|id| (id, person(id).name)).collect(),
    ));
    let next_id = Arc::new(AtomicI64::new(n + 1));
    let writers = start_writers(
        &db,
        enc.clone(),
        n,
        8,
        stop.clone(),
        latest.clone(),
        next_id.clone(),
    );
    // Throttled so that five kills land before the end; the kill points are
    // random: during start-up, key creation, a batch or a pause.
    let throttled = [
        "rotate",
        "--all-tenants",
        "--batch-size",
        "50",
        "--workers",
        "2",
        "--max-rows-per-second",
        "1000",
    ];
    let args = &throttled[..6];
    for attempt in 0..5 {
        // The first kill may land before the job exists (during key
        // creation); later ones land inside the job.
        common::kill_midway(&db, &keyring_v1, &throttled, attempt > 0, (30, 500)).await;
    }
    // The last run completes while the writers keep going.
    let fin = common::rowseal(&db.url, &keyring_v1, args).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 0);
    assert_eq!(
        fin.code,
        Some(0),
        "final rotate: {}\n{}",
        fin.stderr,
        fin.stdout
    );
    assert!(
        fin.event("resume").is_some(),
        "the final run resumes the job"
    );
    let done = fin.event("done").unwrap().clone();
    assert_eq!(done["failed"], 0);

    // Every row on version 2, each re-encrypted exactly once (trigger count
    // equals the job's own committed count).
    let total = scalar_rows(&db).await;
    assert_eq!(total, next_id.load(Ordering::Relaxed) - 1);
    let status = common::rowseal(&db.url, &keyring_v1, &["status"]).await;
    let people = status
        .all("table")
        .into_iter()
        .find(|t| t["table"] == "people")
        .unwrap()
        .clone();
    assert_eq!(people["rows_to_rotate"], 0, "{people}");
    assert_eq!(people["rows"], total);
    let counts = common::rotation_counts(&db).await;
    assert!(
        counts.values().all(|&c| c == 1),
        "a row was re-encrypted twice"
    );
    let counted: i64 = counts.values().sum();
    // The job also gave the 40 kms-mode secrets a new data key each.
    assert_eq!(counted + 40, done["job_rows_done"].as_i64().unwrap());
    assert!(
        (1..=n).all(|id| counts.contains_key(&id)),
        "every seeded row rotated once"
    );
    assert!(
        counts.keys().all(|&id| id >= 1 && id <= total),
        "rows inserted on the new version are not re-encrypted"
    );
    eprintln!(
        "[{}] rotate: {total} rows, {writes} concurrent writes, 5 kills, {counted} re-encryptions",
        db.kind
    );

    // Every row decrypts to its latest value (a fresh application process).
    let fresh = common::encryptor(&db.pool, &keyring_v1);
    let all: Vec<Person> = fresh
        .fetch_all(
            rowseal_sqlx::TenantScope::Any,
            sqlx::query(&format!(
                "SELECT {} FROM people",
                Encryptor::select_list::<Person, DB>()
            )),
            &db.pool,
        )
        .await
        .unwrap();
    let latest = latest.lock().unwrap().clone();
    assert_eq!(all.len(), latest.len());
    for p in &all {
        assert_eq!(Some(&p.name), latest.get(&p.id), "row {}", p.id);
    }

    let verify = common::rowseal(&db.url, &keyring_v1, &["verify"]).await;
    assert_eq!(
        verify.code,
        Some(0),
        "verify: {}\n{}",
        verify.stderr,
        verify.stdout
    );
    assert_eq!(verify.event("done").unwrap()["failures"], 0);

    // Rewrap under a second root key: one ReEncrypt per tenant key version
    // and per kms-mode row, none per derived-mode row.
    let v2 = LocalKeyProvider::generate_keyring().replace("v1:", "v2:");
    let keyring_both = format!("{keyring_v1}\n{v2}");
    let keys = common::scalar(&db, "SELECT COUNT(*) FROM rowseal_keys").await;
    let rewrap = common::rowseal(&db.url, &keyring_both, &["rewrap", "--to", "local:v2"]).await;
    assert_eq!(rewrap.code, Some(0), "rewrap: {}", rewrap.stderr);
    let r = rewrap.event("done").unwrap();
    assert_eq!(r["keys_rewrapped"], keys);
    assert_eq!(r["rows_rewrapped"], 40);
    assert_eq!(r["provider_calls"]["reencrypt"], keys + 40);
    assert_eq!(r["provider_calls"]["decrypt"], 0);
    // Only v2 is needed now.
    let verify = common::rowseal(&db.url, &v2, &["verify"]).await;
    assert_eq!(
        verify.code,
        Some(0),
        "verify after rewrap: {}\n{}",
        verify.stderr,
        verify.stdout
    );
    let again = common::rowseal(&db.url, &keyring_both, &["rewrap", "--to", "local:v2"]).await;
    assert_eq!(
        again.event("done").unwrap()["provider_calls"]["reencrypt"],
        0
    );

    // Tampering is reported by primary key, never by value.
    let target = 7i64;
    let sql = format!("UPDATE people SET rowseal_header = (SELECT rowseal_header FROM (SELECT rowseal_header FROM people WHERE id = 8) AS x) WHERE id = {target}");
    sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
    let verify = common::rowseal(&db.url, &v2, &["verify"]).await;
    assert_eq!(verify.code, Some(1));
    let failures = verify.all("failure");
    assert!(failures.iter().any(|f| f["primary_key"] == "7"));
    assert!(
        !verify.stdout.contains("name-7"),
        "no plaintext in the report"
    );

    // Shred: refused without confirmation, then tenant t3 only.
    let refused = common::rowseal(&db.url, &v2, &["shred", "--tenant", "t3"]).await;
    assert_eq!(refused.code, Some(6), "{}", refused.stderr);
    let wrong = common::rowseal(
        &db.url,
        &v2,
        &["shred", "--tenant", "t3", "--yes-destroy-tenant", "t4"],
    )
    .await;
    assert_eq!(wrong.code, Some(6));
    let shred = common::rowseal(
        &db.url,
        &v2,
        &["shred", "--tenant", "t3", "--yes-destroy-tenant", "t3"],
    )
    .await;
    assert_eq!(shred.code, Some(0), "{}", shred.stderr);
    let verify = common::rowseal(&db.url, &v2, &["verify"]).await;
    assert_eq!(verify.code, Some(1));
    let failures = verify.all("failure");
    let t3_rows = common::scalar(&db, "SELECT COUNT(*) FROM people WHERE tenant_id = 't3'").await
        + common::scalar(&db, "SELECT COUNT(*) FROM secrets WHERE tenant_id = 't3'").await;
    let t3_failures = failures.iter().filter(|f| f["tenant"] == "t3").count() as i64;
    assert_eq!(t3_failures, t3_rows);
    assert!(failures
        .iter()
        .filter(|f| f["tenant"] == "t3" && f["table"] == "people")
        .all(|f| f["error"].as_str().unwrap().starts_with("key destroyed")));
    let others: Vec<_> = failures.iter().filter(|f| f["tenant"] != "t3").collect();
    assert_eq!(
        others.len(),
        1,
        "only the tampered row of another tenant: {others:?}"
    );
    // The application cannot read t3 either, with a typed error.
    let app = common::encryptor(&db.pool, &v2);
    let err = app
        .fetch::<Person, _>(&db.pool, "t3", &3)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), rowseal_sqlx::ErrorKind::KeyDestroyed, "{err}");
    assert!(app
        .fetch::<Person, _>(&db.pool, "t4", &4)
        .await
        .unwrap()
        .is_some());

    let status = common::rowseal(&db.url, &v2, &["status"]).await;
    assert_eq!(status.code, Some(0));
    db.finish().await;
}

/// `rows_by_format_version` of one table in `rowseal status`.
async fn formats_of<DB: Backend>(db: &Db<DB>, keyring: &str, table: &str) -> serde_json::Value {
    let status = common::rowseal(&db.url, keyring, &["status", "--json"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    status
        .all("table")
        .into_iter()
        .find(|t| t["table"] == table)
        .unwrap()["rows_by_format_version"]
        .clone()
}

/// The format upgrade path: 10,000 rows written by a format 1 writer (20
/// tenants, a third with a NULL field, plus kms-mode rows) are moved to
/// format 2 by `rowseal rotate` while 4 application writers update and
/// insert (through the format 2 library) and the tool is killed with SIGKILL
/// twice. Every row then reads its latest value, no row is left in format
/// 1, and verify passes.
async fn format_upgrade<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n = 10_000;
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let init = common::rowseal(&db.url, &keyring, &["init"]).await;
    assert_eq!(init.code, Some(0), "init: {}", init.stderr);
    common::prepare(&db).await;
    let old_writer = common::encryptor(&db.pool, &keyring).__writing_format_1();
    seed(&db, &old_writer, n).await;
    assert_eq!(
        formats_of(&db, &keyring, "people").await,
        serde_json::json!({"1": n})
    );
    assert_eq!(
        formats_of(&db, &keyring, "secrets").await,
        serde_json::json!({"1": 40})
    );

    let enc = Arc::new(common::encryptor(&db.pool, &keyring));
    let stop = Arc::new(AtomicBool::new(false));
    let latest: Arc<Mutex<HashMap<i64, String>>> = Arc::new(Mutex::new(
        (1..=n).map(|id| (id, person(id).name)).collect(),
    ));
    let next_id = Arc::new(AtomicI64::new(n + 1));
    let writers = start_writers(
        &db,
        enc.clone(),
        n,
        4,
        stop.clone(),
        latest.clone(),
        next_id.clone(),
    );
    let throttled = [
        "rotate",
        "--all-tenants",
        "--batch-size",
        "100",
        "--workers",
        "2",
        "--max-rows-per-second",
        "1000",
    ];
    for attempt in 0..2 {
        common::kill_midway(&db, &keyring, &throttled, attempt > 0, (200, 1500)).await;
    }
    let mid = formats_of(&db, &keyring, "people").await;
    assert!(
        mid["1"].as_i64().unwrap_or(0) > 0,
        "the kills landed before the end: {mid}"
    );
    let fin = common::rowseal(&db.url, &keyring, &throttled[..6]).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert_eq!(
        fin.code,
        Some(0),
        "final rotate: {}\n{}",
        fin.stderr,
        fin.stdout
    );
    assert_eq!(fin.event("done").unwrap()["failed"], 0);

    let total = scalar_rows(&db).await;
    assert_eq!(total, next_id.load(Ordering::Relaxed) - 1);
    assert_eq!(
        formats_of(&db, &keyring, "people").await,
        serde_json::json!({"2": total}),
        "no row left in format 1"
    );
    assert_eq!(
        formats_of(&db, &keyring, "secrets").await,
        serde_json::json!({"2": 40})
    );
    let fresh = common::encryptor(&db.pool, &keyring);
    let all: Vec<Person> = fresh
        .fetch_all(
            rowseal_sqlx::TenantScope::Any,
            sqlx::query(&format!(
                "SELECT {} FROM people",
                Encryptor::select_list::<Person, DB>()
            )),
            &db.pool,
        )
        .await
        .unwrap();
    let latest = latest.lock().unwrap().clone();
    assert_eq!(all.len(), latest.len());
    for p in &all {
        assert_eq!(Some(&p.name), latest.get(&p.id), "row {}", p.id);
        assert_eq!(p.note, person(p.id).note, "row {}", p.id);
    }
    let verify = common::rowseal(&db.url, &keyring, &["verify"]).await;
    assert_eq!(
        verify.code,
        Some(0),
        "verify: {}\n{}",
        verify.stderr,
        verify.stdout
    );
    assert_eq!(verify.event("done").unwrap()["failures"], 0);
    eprintln!(
        "[{}] format upgrade: {n} format 1 rows + 40 kms-mode rows to format 2, {writes} concurrent writes, 2 kills",
        db.kind
    );
    db.finish().await;
}

async fn scalar_rows<DB: Backend>(db: &Db<DB>) -> i64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    common::scalar(db, "SELECT COUNT(*) FROM people").await
}

/// Two processes on one job: the rows are split, none is done twice.
async fn two_processes<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n = rows() * 2;
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    rowseal_sqlx::schema::install(&db.pool).await.unwrap();
    common::prepare(&db).await;
    let enc = common::encryptor(&db.pool, &keyring);
    seed(&db, &enc, n).await;
    let args = [
        "rotate",
        "--all-tenants",
        "--batch-size",
        "25",
        "--kms-rate",
        "1000",
    ];
    let a = common::command(&db.url, &keyring, &args).spawn().unwrap();
    // Wait for the job, then join it from a second process.
    for _ in 0..200 {
        if common::scalar(&db, "SELECT COUNT(*) FROM rowseal_jobs").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = common::command(&db.url, &keyring, &args).spawn().unwrap();
    let (a, b) = tokio::join!(a.wait_with_output(), b.wait_with_output());
    let (a, b) = (a.unwrap(), b.unwrap());
    let a = common::parse(a.status.code(), &a.stdout, &a.stderr);
    let b = common::parse(b.status.code(), &b.stdout, &b.stderr);
    assert_eq!(a.code, Some(0), "{}", a.stderr);
    assert_eq!(b.code, Some(0), "{}", b.stderr);
    assert!(
        b.event("resume").is_some(),
        "the second process joined the job"
    );
    let ra = a.event("done").unwrap()["reencrypted"].as_i64().unwrap();
    let rb = b.event("done").unwrap()["reencrypted"].as_i64().unwrap();
    eprintln!(
        "[{}] two processes: {ra} + {rb} rows of {n} (+40 kms-mode)",
        db.kind
    );
    assert_eq!(ra + rb, n + 40, "people and the kms-mode secrets");
    assert!(ra > 0 && rb > 0, "both processes worked: {ra} / {rb}");
    let counts = common::rotation_counts(&db).await;
    assert_eq!(counts.len() as i64, n);
    assert!(counts.values().all(|&c| c == 1));
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM rowseal_jobs WHERE state = 'done'"
        )
        .await,
        1
    );
    db.finish().await;
}

/// Two fresh runs of the same rotation started at the same instant: one new
/// key version per tenant, one job, both processes finish, each row
/// re-encrypted once.
async fn simultaneous_start<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n = rows();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    rowseal_sqlx::schema::install(&db.pool).await.unwrap();
    common::prepare(&db).await;
    let enc = common::encryptor(&db.pool, &keyring);
    seed(&db, &enc, n).await;
    let args = ["rotate", "--all-tenants", "--batch-size", "50"];
    let a = common::command(&db.url, &keyring, &args).spawn().unwrap();
    let b = common::command(&db.url, &keyring, &args).spawn().unwrap();
    let (a, b) = tokio::join!(a.wait_with_output(), b.wait_with_output());
    let (a, b) = (a.unwrap(), b.unwrap());
    let a = common::parse(a.status.code(), &a.stdout, &a.stderr);
    let b = common::parse(b.status.code(), &b.stdout, &b.stderr);
    assert_eq!(a.code, Some(0), "{}\n{}", a.stderr, a.stdout);
    assert_eq!(b.code, Some(0), "{}\n{}", b.stderr, b.stdout);
    let tenant_keys = |v: i64| {
        format!("SELECT COUNT(*) FROM rowseal_keys WHERE purpose = 'tenant' AND version = {v}")
    };
    assert_eq!(common::scalar(&db, &tenant_keys(2)).await, TENANTS);
    assert_eq!(
        common::scalar(&db, &tenant_keys(3)).await,
        0,
        "one new version per tenant"
    );
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM rowseal_jobs WHERE kind = 'rotate'"
        )
        .await,
        1,
        "one job"
    );
    let ids: Vec<&str> = [&a, &b]
        .iter()
        .map(|r| {
            r.events
                .iter()
                .find_map(|e| e["job"].as_str())
                .unwrap_or_else(|| panic!("no job named: {}", r.stdout))
        })
        .collect();
    assert_eq!(ids[0], ids[1], "both runs worked on the same job");
    assert!(
        a.event("resume").is_some() || b.event("resume").is_some(),
        "one run joined the other's start"
    );
    let done = |r: &common::Run| {
        r.event("done").unwrap()["reencrypted"]
            .as_i64()
            .unwrap_or(0)
    };
    let (ra, rb) = (done(&a), done(&b));
    eprintln!(
        "[{}] simultaneous start: {ra} + {rb} rows of {n} (+40 kms-mode)",
        db.kind
    );
    assert_eq!(ra + rb, n + 40, "people and the kms-mode secrets");
    let counts = common::rotation_counts(&db).await;
    assert_eq!(counts.len() as i64, n);
    assert!(
        counts.values().all(|&c| c == 1),
        "a row was re-encrypted twice"
    );
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM people WHERE rowseal_key_version <> 2"
        )
        .await,
        0
    );
    db.finish().await;
}

/// A second derived-mode table, for job scopes.
#[derive(rowseal_sqlx::Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "notes", record_type = "note", tenant = tenant_id, primary_key = id)]
struct Note {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    body: String,
}

/// `--table` is part of a job's scope: a run for another table starts its
/// own job instead of joining (and a run for the same table resumes).
async fn table_scope<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n = rows();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    rowseal_sqlx::schema::install(&db.pool).await.unwrap();
    common::prepare(&db).await;
    rowseal_sqlx::schema::create_table::<Note, _>(&db.pool)
        .await
        .unwrap();
    rowseal_sqlx::schema::register::<Note, _>(&db.pool)
        .await
        .unwrap();
    let enc = common::encryptor(&db.pool, &keyring);
    seed(&db, &enc, n).await;
    let notes: Vec<Note> = (1..=200)
        .map(|id| Note {
            id,
            tenant_id: format!("t{}", id % TENANTS),
            body: format!("note body {id}"),
        })
        .collect();
    enc.insert_many(&db.pool, &notes).await.unwrap();

    // A people job, killed while it runs.
    let people_args = [
        "rotate",
        "--all-tenants",
        "--table",
        "people",
        "--batch-size",
        "20",
        "--max-rows-per-second",
        "200",
    ];
    let mut child = common::command(&db.url, &keyring, &people_args)
        .spawn()
        .unwrap();
    let running = "SELECT COUNT(*) FROM rowseal_jobs WHERE kind = 'rotate' AND state = 'running' AND rows_done > 0";
    for _ in 0..1000 {
        if common::scalar(&db, running).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let status = common::rowseal(&db.url, &keyring, &["status"]).await;
    let job = status.event("job").unwrap().clone();
    assert_eq!(job["kind"], "rotate");
    assert_eq!(
        job["scope"]["tables"],
        serde_json::json!(["people"]),
        "{job}"
    );
    assert_eq!(job["scope"]["all_tenants"], true);
    let people_job = job["id"].as_str().unwrap().to_owned();

    // A notes run does not join the people job.
    let r = common::rowseal(
        &db.url,
        &keyring,
        &["rotate", "--all-tenants", "--table", "notes"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    assert!(r.event("resume").is_none(), "{}", r.stdout);
    let start = r.event("start").unwrap();
    assert_ne!(start["job"], people_job.as_str());
    assert_eq!(start["tables"], serde_json::json!(["notes"]));
    assert_eq!(r.event("done").unwrap()["reencrypted"], 200);
    // The people job is still running, with rows left.
    let people_left = common::scalar(
        &db,
        "SELECT COUNT(*) FROM people WHERE rowseal_key_version = 1",
    )
    .await;
    assert!(people_left > 0);
    let status = common::rowseal(&db.url, &keyring, &["status"]).await;
    let jobs = status.all("job");
    assert_eq!(jobs.len(), 1, "only the people job runs");
    assert_eq!(jobs[0]["id"], people_job.as_str());

    // The people run resumes its job, and only touches people.
    let r = common::rowseal(&db.url, &keyring, &people_args[..4]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    assert_eq!(r.event("resume").unwrap()["job"], people_job.as_str());
    let counts = common::rotation_counts(&db).await;
    assert_eq!(counts.len() as i64, n);
    assert!(counts.values().all(|&c| c == 1));
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM people WHERE rowseal_key_version < 2"
        )
        .await,
        0
    );
    db.finish().await;
}

/// Per-row counts of key-header changes of `secrets` (a trigger).
async fn count_secret_rotations<DB: Backend>(db: &Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let stmts: Vec<&str> = match db.kind {
        "postgres" => vec![
            "CREATE TABLE secret_rotations (id BIGINT PRIMARY KEY, n INT NOT NULL)",
            "CREATE FUNCTION count_secret_rotation() RETURNS trigger AS $$ BEGIN
               IF NEW.rowseal_header IS DISTINCT FROM OLD.rowseal_header THEN
                 INSERT INTO secret_rotations (id, n) VALUES (NEW.id, 1)
                 ON CONFLICT (id) DO UPDATE SET n = secret_rotations.n + 1;
               END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER secrets_rotation AFTER UPDATE ON secrets FOR EACH ROW EXECUTE FUNCTION count_secret_rotation()",
        ],
        "mysql" => vec![
            "CREATE TABLE secret_rotations (id BIGINT PRIMARY KEY, n INT NOT NULL)",
            "CREATE TRIGGER secrets_rotation AFTER UPDATE ON secrets FOR EACH ROW BEGIN
               IF NOT (NEW.rowseal_header <=> OLD.rowseal_header) THEN
                 INSERT INTO secret_rotations (id, n) VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1;
               END IF; END",
        ],
        _ => vec![
            "CREATE TABLE secret_rotations (id BIGINT PRIMARY KEY, n INT NOT NULL)",
            "CREATE TRIGGER secrets_rotation AFTER UPDATE ON secrets
               WHEN NEW.rowseal_header IS NOT OLD.rowseal_header BEGIN
               INSERT INTO secret_rotations (id, n) VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
             END",
        ],
    };
    for s in stmts {
        sqlx::raw_sql(s).execute(&db.pool).await.unwrap();
    }
}

/// Every row's key header, by id.
async fn secret_headers<DB: Backend>(db: &Db<DB>) -> HashMap<i64, Vec<u8>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use rowseal_sqlx::{DbRow, SqlType, Value};
    let rows = DB::fetch_all(&db.pool, "SELECT id, rowseal_header FROM secrets", vec![])
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id = match r.read_value(0, SqlType::I64).unwrap() {
                Value::I64(v) => v,
                _ => panic!("id"),
            };
            (id, r.read_bytes(1).unwrap().to_vec())
        })
        .collect()
}

/// kms-mode rotation: every row gets a new data key (one GenerateDataKey
/// each), resumable after kill -9, while the application updates rows; each
/// row rotated once; no tenant-key version is created.
async fn kms_rotation<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n = 300i64;
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    rowseal_sqlx::schema::install(&db.pool).await.unwrap();
    common::prepare(&db).await;
    count_secret_rotations(&db).await;
    let enc = Arc::new(common::encryptor(&db.pool, &keyring));
    let secret = |id: i64, round: i64| Secret {
        id,
        tenant_id: format!("t{}", id % 4),
        body: format!("secret body {id} r{round}"),
    };
    let rows: Vec<Secret> = (1..=n).map(|id| secret(id, 0)).collect();
    enc.insert_many(&db.pool, &rows).await.unwrap();
    let before = secret_headers(&db).await;
    let tenant_keys = "SELECT COUNT(*) FROM rowseal_keys WHERE purpose = 'tenant'";
    let keys_before = common::scalar(&db, tenant_keys).await;

    let dry = common::rowseal(
        &db.url,
        &keyring,
        &["rotate", "--all-tenants", "--table", "secrets", "--dry-run"],
    )
    .await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_eq!(dry.event("dry_run").unwrap()["kms_mode_rows"], n);

    // The application keeps updating bodies meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let latest: Arc<Mutex<HashMap<i64, String>>> = Arc::new(Mutex::new(
        (1..=n).map(|id| (id, secret(id, 0).body)).collect(),
    ));
    let writer = {
        let (pool, enc, stop, latest) =
            (db.pool.clone(), enc.clone(), stop.clone(), latest.clone());
        tokio::spawn(async move {
            let mut round = 0;
            let mut writes = 0i64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let id = 1 + rand::random::<i64>().rem_euclid(n);
                let row = secret(id, round);
                let mut ok = false;
                for _ in 0..50 {
                    match enc.update_fields(&pool, &row, &["body"]).await {
                        Ok(()) => {
                            ok = true;
                            break;
                        }
                        Err(rowseal_sqlx::Error::Conflict { .. }) => continue,
                        Err(e) => panic!("writer: {e}"),
                    }
                }
                assert!(ok);
                writes += 1;
                latest.lock().unwrap().insert(id, row.body);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            writes
        })
    };
    let args = [
        "rotate",
        "--all-tenants",
        "--table",
        "secrets",
        "--batch-size",
        "10",
        "--workers",
        "2",
        "--max-rows-per-second",
        "400",
    ];
    let progressed = "SELECT COUNT(*) FROM rowseal_jobs WHERE kind = 'rotate' AND state = 'running' AND rows_done > 0";
    for _ in 0..2 {
        let mut child = common::command(&db.url, &keyring, &args).spawn().unwrap();
        for _ in 0..1000 {
            if common::scalar(&db, progressed).await > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 150)).await;
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    let fin = common::rowseal(&db.url, &keyring, &args).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert_eq!(fin.code, Some(0), "{}\n{}", fin.stderr, fin.stdout);
    assert!(fin.event("resume").is_some());
    let done = fin.event("done").unwrap().clone();
    assert_eq!(done["failed"], 0);
    assert_eq!(done["job_rows_done"], n, "{done}");
    assert!(
        done["provider_calls"]["generate"].as_i64().unwrap()
            >= done["reencrypted"].as_i64().unwrap(),
        "one GenerateDataKey per row: {done}"
    );
    // Every row has a new data key, each changed once.
    let after = secret_headers(&db).await;
    assert_eq!(after.len() as i64, n);
    assert!(after.iter().all(|(id, h)| before[id] != *h));
    use rowseal_sqlx::{DbRow, SqlType, Value};
    let counts = DB::fetch_all(&db.pool, "SELECT id, n FROM secret_rotations", vec![])
        .await
        .unwrap();
    assert_eq!(counts.len() as i64, n, "every row rotated");
    // Each application write re-keys its row too (a new data key per
    // write), so the header changes are the tool's n plus the writer's:
    // one more, and a row was rotated twice.
    let mut changes = 0;
    for r in &counts {
        changes += match r.read_value(1, SqlType::I64) {
            Ok(Value::I64(v)) => v,
            _ => match r.read_value(1, SqlType::I32).unwrap() {
                Value::I32(v) => i64::from(v),
                _ => panic!("n"),
            },
        };
    }
    assert_eq!(changes, n + writes, "each row rotated exactly once");
    assert_eq!(
        common::scalar(&db, tenant_keys).await,
        keys_before,
        "no tenant key created"
    );
    // Every row decrypts to its latest value, and verify passes.
    let fresh = common::encryptor(&db.pool, &keyring);
    let latest = latest.lock().unwrap().clone();
    for id in 1..=n {
        let got = fresh
            .fetch::<Secret, _>(&db.pool, &format!("t{}", id % 4), &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Some(&got.body), latest.get(&id), "row {id}");
    }
    let verify = common::rowseal(&db.url, &keyring, &["verify", "--table", "secrets"]).await;
    assert_eq!(verify.code, Some(0), "{}", verify.stdout);
    eprintln!(
        "[{}] kms-mode rotate: {n} rows, 2 kills, {} provider calls in the last run",
        db.kind, done["provider_calls"]
    );
    db.finish().await;
}

/// The kms-mode rows of a shredded tenant have no key left: rotation skips
/// them (no failure), like the derived-mode rows of that tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_rotation_skips_shredded_tenants() {
    let db = common::sqlite().await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    rowseal_sqlx::schema::install(&db.pool).await.unwrap();
    common::prepare(&db).await;
    let enc = common::encryptor(&db.pool, &keyring);
    seed(&db, &enc, 100).await;
    let shred = common::rowseal(
        &db.url,
        &keyring,
        &["shred", "--tenant", "t1", "--yes-destroy-tenant", "t1"],
    )
    .await;
    assert_eq!(shred.code, Some(0), "{}", shred.stderr);
    let r = common::rowseal(&db.url, &keyring, &["rotate", "--all-tenants"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    let done = r.event("done").unwrap();
    assert_eq!(done["failed"], 0, "{done}");
    // 100 people and 40 secrets over 20 tenants, minus t1's 5 + 2.
    assert_eq!(done["reencrypted"], 95 + 38, "{done}");

    // rewrap skips them too; a kms-mode row whose header is unreadable
    // (not shredded) is a failure by primary key, and exit 1.
    let v2 = LocalKeyProvider::generate_keyring().replace("v1:", "v2:");
    let both = format!("{keyring}\n{v2}");
    let r = common::rowseal(&db.url, &both, &["rewrap", "--to", "local:v2"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    let done = r.event("done").unwrap();
    assert_eq!(done["shredded_rows_skipped"], 2, "{done}");
    assert_eq!(done["rows_rewrapped"], 38, "{done}");
    assert_eq!(done["failed"], 0);
    sqlx::raw_sql("UPDATE secrets SET rowseal_header = X'0102' WHERE id = 5")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = common::rowseal(&db.url, &both, &["rewrap", "--to", "local:v1"]).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stderr, r.stdout);
    let failures = r.all("failure");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["primary_key"], "5");
    assert_eq!(r.event("done").unwrap()["rows_rewrapped"], 37);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_kms_rotation() {
    if let Some(db) = common::sqlite().await {
        kms_rotation(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_kms_rotation() {
    if let Some(db) = common::postgres().await {
        kms_rotation(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_kms_rotation() {
    if let Some(db) = common::mysql().await {
        kms_rotation(db).await;
    }
}

/// A run killed while it held the start lock (after creating a key version
/// and recording it) is taken over at once by the next run on the same
/// host, which reuses that version instead of creating another.
async fn start_takeover<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    rowseal_sqlx::schema::install(&db.pool).await.unwrap();
    common::prepare(&db).await;
    let enc = common::encryptor(&db.pool, &keyring);
    seed(&db, &enc, 200).await;
    let args = ["rotate", "--tenant", "t1", "--table", "people"];
    let r = common::rowseal(&db.url, &keyring, &args).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.event("start").unwrap()["tenant_versions"]["t1"], 2);

    // The state a run leaves when killed during its start: version 3
    // created and recorded in the start lock, no job yet.
    assert_eq!(enc.keys().rotate_tenant_key("t1").await.unwrap(), 3);
    let dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap();
    let params = serde_json::json!({"scope": {"tenant": "t1", "tables": ["people"]}, "beat": 1,
                                    "planned": {"targets": {"t1": 3}}});
    let sql = format!(
        "UPDATE rowseal_jobs SET state = 'starting', worker = '{host}:{pid}', params = '{params}' WHERE kind = 'rotate-start'"
    );
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM rowseal_jobs WHERE kind = 'rotate-start'"
        )
        .await,
        1,
        "one start lock for the scope"
    );
    sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();

    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        common::rowseal(&db.url, &keyring, &args),
    )
    .await
    .expect("the dead holder's start was taken over");
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        r.event("start").unwrap()["tenant_versions"]["t1"],
        3,
        "the recorded version is reused"
    );
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM rowseal_keys WHERE purpose = 'tenant' AND tenant = 't1' AND version > 3"
        )
        .await,
        0,
        "no other version created"
    );
    assert_eq!(r.event("done").unwrap()["reencrypted"], 10);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_start_takeover() {
    if let Some(db) = common::sqlite().await {
        start_takeover(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_start_takeover() {
    if let Some(db) = common::postgres().await {
        start_takeover(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_start_takeover() {
    if let Some(db) = common::mysql().await {
        start_takeover(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_simultaneous_start() {
    if let Some(db) = common::sqlite().await {
        simultaneous_start(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_simultaneous_start() {
    if let Some(db) = common::postgres().await {
        simultaneous_start(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_simultaneous_start() {
    if let Some(db) = common::mysql().await {
        simultaneous_start(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_table_scope() {
    if let Some(db) = common::sqlite().await {
        table_scope(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_table_scope() {
    if let Some(db) = common::postgres().await {
        table_scope(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_table_scope() {
    if let Some(db) = common::mysql().await {
        table_scope(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_full() {
    if let Some(db) = common::sqlite().await {
        full_scenario(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_full() {
    if let Some(db) = common::postgres().await {
        full_scenario(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_full() {
    if let Some(db) = common::mysql().await {
        full_scenario(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_processes() {
    if let Some(db) = common::postgres().await {
        two_processes(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_two_processes() {
    if let Some(db) = common::mysql().await {
        two_processes(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_processes() {
    if let Some(db) = common::sqlite().await {
        two_processes(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_format_upgrade() {
    if let Some(db) = common::sqlite().await {
        format_upgrade(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_format_upgrade() {
    if let Some(db) = common::postgres().await {
        format_upgrade(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_format_upgrade() {
    if let Some(db) = common::mysql().await {
        format_upgrade(db).await;
    }
}
