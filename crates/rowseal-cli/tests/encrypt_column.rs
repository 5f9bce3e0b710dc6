#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `rowseal encrypt-column` on SQLite, PostgreSQL and MariaDB: a table of
//! plaintext rows adopted by a model with `plaintext_column` fields is
//! encrypted while the application updates and inserts rows, with `kill -9`
//! at random points and a resume each time. Afterwards no plaintext is left,
//! every row decrypts to its latest value, every row left plaintext exactly
//! once (counted by a trigger), blind-index lookups find the rows the job
//! encrypted, `verify` passes and `status` counts nothing left.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Db;
use rowseal_sqlx::{schema, Backend, Encrypted, Encryptor, SqlType, Value};

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "patients", record_type = "patient", tenant = tenant_id, primary_key = id, bind_primary_key)]
struct Patient {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        column = "email_ct",
        plaintext_column = "email",
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
    #[rowseal(encrypt, column = "phone_ct", plaintext_column = "phone")]
    phone: Option<String>,
    visits: i64,
}

fn email(id: i64) -> String {
    format!("Person{id}@Example.com")
}

fn phone(id: i64) -> Option<String> {
    (id % 3 != 0).then(|| format!("555-{id:06}"))
}

fn tenant(id: i64) -> String {
    format!("clinic-{}", id % 4)
}

/// The legacy table and its plaintext rows, the adoption DDL, the registry,
/// and a trigger that counts per row every update that takes `email` from a
/// value to NULL (the row leaving plaintext) in `encryptions`.
async fn prepare<DB: Backend>(db: &Db<DB>, n: i64)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    schema::install(&db.pool).await.unwrap();
    let not_null = if db.kind == "sqlite" { "" } else { " NOT NULL" };
    let ddl = format!(
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, tenant_id VARCHAR(255) NOT NULL, \
         email VARCHAR(255){not_null}, phone TEXT, visits BIGINT NOT NULL)"
    );
    sqlx::raw_sql(&ddl).execute(&db.pool).await.unwrap();
    let mut id = 1;
    while id <= n {
        let mut sql =
            String::from("INSERT INTO patients (id, tenant_id, email, phone, visits) VALUES ");
        let mut values = Vec::new();
        let end = (id + 199).min(n);
        for i in id..=end {
            if i > id {
                sql.push_str(", ");
            }
            sql.push('(');
            for k in 0..5 {
                if k > 0 {
                    sql.push_str(", ");
                }
                DB::push_placeholder(&mut sql, values.len() + k + 1);
            }
            sql.push(')');
            values.extend([
                Value::I64(i),
                Value::Text(tenant(i)),
                Value::Text(email(i)),
                phone(i).map_or(Value::Null(SqlType::Text), Value::Text),
                Value::I64(0),
            ]);
        }
        DB::execute(&db.pool, &sql, values).await.unwrap();
        id = end + 1;
    }
    schema::adopt_table::<Patient, _>(&db.pool).await.unwrap();
    schema::register::<Patient, _>(&db.pool).await.unwrap();
    let stmts: Vec<&str> = match db.kind {
        "postgres" => vec![
            "CREATE TABLE encryptions (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
            "CREATE FUNCTION count_encryption() RETURNS trigger AS $$ BEGIN
               IF OLD.email IS NOT NULL AND NEW.email IS NULL THEN
                 INSERT INTO encryptions (id, n) VALUES (NEW.id, 1)
                 ON CONFLICT (id) DO UPDATE SET n = encryptions.n + 1;
               END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER patients_encryption AFTER UPDATE ON patients FOR EACH ROW EXECUTE FUNCTION count_encryption()",
        ],
        "mysql" => vec![
            "CREATE TABLE encryptions (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
            "CREATE TRIGGER patients_encryption AFTER UPDATE ON patients FOR EACH ROW BEGIN
               IF OLD.email IS NOT NULL AND NEW.email IS NULL THEN
                 INSERT INTO encryptions (id, n) VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1;
               END IF; END",
        ],
        _ => vec![
            "CREATE TABLE encryptions (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
            "CREATE TRIGGER patients_encryption AFTER UPDATE ON patients
               WHEN OLD.email IS NOT NULL AND NEW.email IS NULL BEGIN
               INSERT INTO encryptions (id, n) VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
             END",
        ],
    };
    for s in stmts {
        sqlx::raw_sql(s).execute(&db.pool).await.unwrap();
    }
}

/// Application writers: update a random field of random rows (legacy or
/// not) through rowseal and insert new rows, recording the latest values.
fn start_writers<DB: Backend>(
    db: &Db<DB>,
    enc: Encryptor,
    n: i64,
    count: usize,
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<HashMap<i64, Patient>>>,
    next_id: Arc<AtomicI64>,
) -> Vec<tokio::task::JoinHandle<u64>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    (0..count)
        .map(|w| {
            let pool = db.pool.clone();
            let enc = enc.clone();
            let stop = stop.clone();
            let latest = latest.clone();
            let next_id = next_id.clone();
            tokio::spawn(async move {
                let mut writes = 0u64;
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    if k.is_multiple_of(5) {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let p = Patient {
                            id,
                            tenant_id: tenant(id),
                            email: email(id),
                            phone: phone(id),
                            visits: 0,
                        };
                        if enc.insert(&pool, &p).await.is_ok() {
                            latest.lock().unwrap().insert(id, p);
                            writes += 1;
                        }
                    } else {
                        // Each writer owns the ids ≡ w (mod count), so the
                        // latest value per row is known without races.
                        let slots = (n as u64 / count as u64).max(1);
                        let id =
                            1 + w as i64 + (rand::random::<u64>() % slots) as i64 * count as i64;
                        if id > n {
                            continue;
                        }
                        let Ok(Some(mut p)) =
                            enc.fetch::<Patient, _>(&pool, &tenant(id), &id).await
                        else {
                            continue;
                        };
                        let field = if k.is_multiple_of(2) {
                            p.email = format!("changed{w}-{k}-{id}@example.com");
                            "email"
                        } else {
                            p.phone = Some(format!("555-9{w}{k}"));
                            "phone"
                        };
                        // The job may be changing the row under us:
                        // update_fields refuses a stale header (Conflict).
                        if enc.update_fields(&pool, &p, &[field]).await.is_ok() {
                            let mut l = latest.lock().unwrap();
                            let e = l.get_mut(&id).unwrap();
                            if field == "email" {
                                e.email = p.email.clone();
                            } else {
                                e.phone = p.phone.clone();
                            }
                            writes += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                writes
            })
        })
        .collect()
}

async fn scenario<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n: i64 = 3000;
    prepare(&db, n).await;
    let keyring = rowseal_core::LocalKeyProvider::generate_keyring().to_string();
    let enc = common::encryptor(&db.pool, &keyring);
    let url = db.url.clone();
    let plaintext_left =
        "SELECT COUNT(*) FROM patients WHERE email IS NOT NULL OR phone IS NOT NULL";

    // status: every value still in plaintext.
    let st = common::rowseal(&url, &keyring, &["status", "--json"]).await;
    assert_eq!(st.code, Some(0), "{}", st.stderr);
    let t = st.event("table").unwrap();
    assert_eq!(t["plaintext_rows_to_encrypt"]["email"], n);
    assert_eq!(
        t["plaintext_rows_to_encrypt"]["phone"],
        (1..=n).filter(|i| phone(*i).is_some()).count()
    );

    // dry run: counts, writes nothing.
    let dry = common::rowseal(
        &url,
        &keyring,
        &["encrypt-column", "--table", "patients", "--dry-run"],
    )
    .await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_eq!(dry.event("plan").unwrap()["rows"], n);
    assert_eq!(common::scalar(&db, plaintext_left).await, n);

    // A column that is not a legacy column: a configuration error.
    let bad = common::rowseal(
        &url,
        &keyring,
        &[
            "encrypt-column",
            "--table",
            "patients",
            "--column",
            "visits",
        ],
    )
    .await;
    assert_eq!(bad.code, Some(3), "{}", bad.stderr);

    let stop = Arc::new(AtomicBool::new(false));
    let latest: Arc<Mutex<HashMap<i64, Patient>>> = Arc::new(Mutex::new(
        (1..=n)
            .map(|id| {
                (
                    id,
                    Patient {
                        id,
                        tenant_id: tenant(id),
                        email: email(id),
                        phone: phone(id),
                        visits: 0,
                    },
                )
            })
            .collect(),
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
        "encrypt-column",
        "--table",
        "patients",
        "--batch-size",
        "50",
        "--workers",
        "2",
        "--max-rows-per-second",
        "1500",
    ];
    for attempt in 0..3 {
        common::kill_midway(&db, &keyring, &throttled, attempt > 0, (100, 400)).await;
    }
    let partly = common::scalar(&db, plaintext_left).await;
    assert!(
        partly > 0 && partly < n,
        "killed mid-job: {partly} rows left"
    );
    // Mid-migration, verify accepts legacy rows (no header, no ciphertext)
    // beside encrypted ones.
    let v = common::rowseal(&url, &keyring, &["verify", "--json"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    assert_eq!(v.event("done").unwrap()["failures"], 0);
    // The last run completes while the writers keep going.
    let fin = common::rowseal(&url, &keyring, &throttled[..7]).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 0);
    assert_eq!(fin.code, Some(0), "{}\n{}", fin.stdout, fin.stderr);
    let done = fin.event("done").unwrap();
    assert_eq!(done["state"], "done");
    assert_eq!(done["failed"], 0);

    // No plaintext anywhere: plain SQL finds none.
    assert_eq!(common::scalar(&db, plaintext_left).await, 0);
    // Exactly once: every original row left plaintext once (by the job or
    // by an application write), none twice, none lost.
    let counts = common::scalar(&db, "SELECT COUNT(*) FROM encryptions").await;
    let max = common::scalar(&db, "SELECT MAX(n) FROM encryptions").await;
    assert_eq!(
        (counts, max),
        (n, 1),
        "rows that left plaintext, most times"
    );
    // Every row decrypts to its latest value (no concurrent write lost).
    let sql = format!(
        "SELECT {} FROM patients ORDER BY id",
        Encryptor::select_list::<Patient, DB>()
    );
    let rows = DB::fetch_all(&db.pool, &sql, vec![]).await.unwrap();
    let all: Vec<Patient> = enc
        .decrypt_all(rowseal_sqlx::TenantScope::Any, &rows)
        .await
        .unwrap();
    let latest = latest.lock().unwrap().clone();
    assert_eq!(all.len(), latest.len());
    for p in &all {
        assert_eq!(Some(p), latest.get(&p.id), "row {}", p.id);
    }
    // Blind indexes filled by the job are the library's: lookups find rows
    // the job encrypted (not rewritten by the application).
    let mut checked = 0;
    for id in (1..=n).step_by(97) {
        let p = &latest[&id];
        if p.email != email(id) {
            continue;
        }
        let found = Patient::find_by_email(&enc, &db.pool, &tenant(id), &format!(" {}", p.email))
            .await
            .unwrap();
        assert_eq!(found, vec![p.clone()]);
        checked += 1;
    }
    assert!(checked > 10);

    let v = common::rowseal(&url, &keyring, &["verify", "--json"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    let st = common::rowseal(&url, &keyring, &["status", "--json"]).await;
    let t = st.event("table").unwrap();
    assert_eq!(t["plaintext_rows_to_encrypt"]["email"], 0);
    assert_eq!(t["plaintext_rows_to_encrypt"]["phone"], 0);
    // Nothing left: a new run finds nothing and says so.
    let again = common::rowseal(&url, &keyring, &["encrypt-column", "--table", "patients"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.event("done").unwrap()["rows"], 0);
    assert!(
        !fin.stdout.contains("@Example.com"),
        "no plaintext in the output"
    );
    eprintln!(
        "[{}] encrypt-column: {n} rows, {writes} concurrent writes, 3 kills; last run: {}",
        db.kind, done
    );
    db.finish().await;
}

/// Two processes running the same job split the rows: together they
/// encrypt every row once, each its own share.
async fn two_processes<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let n: i64 = 3000;
    prepare(&db, n).await;
    let keyring = rowseal_core::LocalKeyProvider::generate_keyring().to_string();
    let args = [
        "encrypt-column",
        "--table",
        "patients",
        "--batch-size",
        "50",
        "--max-rows-per-second",
        "2000",
    ];
    let (a, b) = tokio::join!(
        common::rowseal(&db.url, &keyring, &args),
        common::rowseal(&db.url, &keyring, &args)
    );
    for r in [&a, &b] {
        assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    }
    let (ra, rb) = (
        a.event("done").unwrap()["rows"].as_i64().unwrap(),
        b.event("done").unwrap()["rows"].as_i64().unwrap(),
    );
    assert_eq!(ra + rb, n, "no row twice, none lost");
    assert!(ra > 0 && rb > 0, "both processes took rows: {ra} + {rb}");
    let counts = common::scalar(&db, "SELECT COUNT(*) FROM encryptions").await;
    let max = common::scalar(&db, "SELECT MAX(n) FROM encryptions").await;
    assert_eq!((counts, max), (n, 1));
    let left = "SELECT COUNT(*) FROM patients WHERE email IS NOT NULL OR phone IS NOT NULL";
    assert_eq!(common::scalar(&db, left).await, 0);
    eprintln!(
        "[{}] encrypt-column, two processes: {ra} + {rb} rows",
        db.kind
    );
    db.finish().await;
}

/// A kms-mode table: each legacy row gets its own data key from the
/// provider when the job encrypts it.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "notes", record_type = "note", tenant = tenant_id, primary_key = id, key_mode = "kms")]
struct Note {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt, column = "body_ct", plaintext_column = "body")]
    body: String,
    #[rowseal(encrypt, column = "score_ct", plaintext_column = "score")]
    score: Option<i32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_kms_mode() {
    let Some(db) = common::sqlite().await else {
        return;
    };
    schema::install(&db.pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, tenant_id VARCHAR(255) NOT NULL, body TEXT, score INTEGER)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for id in 1..=20i64 {
        sqlx::query("INSERT INTO notes (id, tenant_id, body, score) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(tenant(id))
            .bind(format!("note {id}"))
            .bind((id % 2 == 0).then_some(id as i32 * 10))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    schema::adopt_table::<Note, _>(&db.pool).await.unwrap();
    schema::register::<Note, _>(&db.pool).await.unwrap();
    let keyring = rowseal_core::LocalKeyProvider::generate_keyring().to_string();
    let enc = common::encryptor(&db.pool, &keyring);
    let before: Vec<Note> = enc
        .fetch_all(
            rowseal_sqlx::TenantScope::Any,
            sqlx::query(&format!(
                "SELECT {} FROM notes ORDER BY id",
                Encryptor::select_list::<Note, sqlx::Sqlite>()
            )),
            &db.pool,
        )
        .await
        .unwrap();
    // One field first (named by its ciphertext column): only its values move.
    let r = common::rowseal(
        &db.url,
        &keyring,
        &["encrypt-column", "--table", "notes", "--column", "score_ct"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.event("done").unwrap()["values"], 10);
    let bodies = "SELECT COUNT(*) FROM notes WHERE body IS NOT NULL";
    assert_eq!(common::scalar(&db, bodies).await, 20);
    // Then the rest (by the plaintext column's name).
    let r = common::rowseal(
        &db.url,
        &keyring,
        &["encrypt-column", "--table", "notes", "--column", "body"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(
        (done["rows"].as_i64(), done["values"].as_i64()),
        (Some(20), Some(20))
    );
    // One new data key per row written: filling a field re-keys the row
    // (format 2 binds which fields are present), so the 10 rows that got a
    // key in the first run get another.
    assert_eq!(done["provider_calls"]["generate"], 20);
    let left = "SELECT COUNT(*) FROM notes WHERE body IS NOT NULL OR score IS NOT NULL";
    assert_eq!(common::scalar(&db, left).await, 0);
    let after: Vec<Note> = enc
        .fetch_all(
            rowseal_sqlx::TenantScope::Any,
            sqlx::query(&format!(
                "SELECT {} FROM notes ORDER BY id",
                Encryptor::select_list::<Note, sqlx::Sqlite>()
            )),
            &db.pool,
        )
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(after[1].score, Some(20));
    let v = common::rowseal(&db.url, &keyring, &["verify", "--json"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    db.finish().await;
}

/// A shredded tenant's legacy rows cannot be encrypted (its keys are
/// destroyed): each is reported by primary key (exit 1, no value printed),
/// the other tenants' rows are encrypted, and a new run reports them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_shredded_tenant() {
    let Some(db) = common::sqlite().await else {
        return;
    };
    let n = 40;
    prepare(&db, n).await;
    let keyring = rowseal_core::LocalKeyProvider::generate_keyring().to_string();
    let enc = common::encryptor(&db.pool, &keyring);
    // clinic-1 has keys (one row written through rowseal), then is shredded.
    let p = Patient {
        id: 1000,
        tenant_id: "clinic-1".into(),
        email: "x@example.com".into(),
        phone: None,
        visits: 0,
    };
    enc.insert(&db.pool, &p).await.unwrap();
    let r = common::rowseal(
        &db.url,
        &keyring,
        &[
            "shred",
            "--tenant",
            "clinic-1",
            "--yes-destroy-tenant",
            "clinic-1",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = common::rowseal(
        &db.url,
        &keyring,
        &["encrypt-column", "--table", "patients"],
    )
    .await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let failures = r.all("failure");
    let shredded = (1..=n).filter(|i| tenant(*i) == "clinic-1").count();
    assert_eq!(failures.len(), shredded);
    assert!(failures
        .iter()
        .all(|f| tenant(f["primary_key"].as_str().unwrap().parse().unwrap()) == "clinic-1"));
    assert_eq!(r.event("done").unwrap()["rows"], n - shredded as i64);
    assert!(
        !r.stdout.contains("@Example.com"),
        "no plaintext in the report"
    );
    let left = "SELECT COUNT(*) FROM patients WHERE email IS NOT NULL";
    assert_eq!(common::scalar(&db, left).await, shredded as i64);
    let again = common::rowseal(
        &db.url,
        &keyring,
        &["encrypt-column", "--table", "patients"],
    )
    .await;
    assert_eq!(again.code, Some(1));
    assert_eq!(again.all("failure").len(), shredded);
    db.finish().await;
}

/// Throughput on PostgreSQL, unthrottled, 2 workers (ignored by default:
/// `cargo test -p rowseal-cli --all-features --test encrypt_column
/// postgres_throughput -- --ignored --nocapture`; rows from
/// `ROWSEAL_TEST_ENCRYPT_ROWS`, default 50000).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check"]
async fn postgres_throughput() {
    let Some(db) = common::postgres().await else {
        return;
    };
    let n: i64 = std::env::var("ROWSEAL_TEST_ENCRYPT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    prepare(&db, n).await;
    let keyring = rowseal_core::LocalKeyProvider::generate_keyring().to_string();
    let started = std::time::Instant::now();
    let r = common::rowseal(
        &db.url,
        &keyring,
        &[
            "encrypt-column",
            "--table",
            "patients",
            "--workers",
            "2",
            "--batch-size",
            "1000",
        ],
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.event("done").unwrap()["rows"], n);
    eprintln!(
        "[postgres] encrypt-column: {n} rows in {secs:.1} s (process), {:.0} rows/s; job: {}",
        n as f64 / secs,
        r.event("done").unwrap()
    );
    db.finish().await;
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
async fn sqlite_encrypt_column() {
    if let Some(db) = common::sqlite().await {
        scenario(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_encrypt_column() {
    if let Some(db) = common::postgres().await {
        scenario(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_encrypt_column() {
    if let Some(db) = common::mysql().await {
        scenario(db).await;
    }
}
