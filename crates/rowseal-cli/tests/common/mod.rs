//! Shared by the CLI tests: a fresh database per test (dropped at the end),
//! the built `rowseal` binary, a model, and the rotation counter trigger.

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Backend, Encrypted, Encryptor, ReadModel, SqlxKeyStore};
use rowseal_test_support::db::{self, TestDb};
#[allow(unused_imports)] // not every test binary uses it
pub use rowseal_test_support::random_name;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "people",
    record_type = "person",
    tenant = tenant_id,
    primary_key = id,
    bind_primary_key
)]
pub struct Person {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(encrypt)]
    pub name: String,
    #[rowseal(encrypt)]
    pub note: Option<String>,
    pub visits: i64,
}

/// A kms-mode table: one provider data key per row.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "secrets", record_type = "secret", tenant = tenant_id, primary_key = id, key_mode = "kms")]
pub struct Secret {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(encrypt)]
    pub body: String,
}

/// A database made for one test (rowseal-test-support): `kind`, `url`,
/// `pool`, dropped by `finish`.
pub type Db<DB> = TestDb<DB>;

/// A fresh PostgreSQL database with a pool of 12.
pub async fn postgres() -> Option<Db<sqlx::Postgres>> {
    db::postgres(12).await
}

/// A fresh MariaDB database with a pool of 12.
pub async fn mysql() -> Option<Db<sqlx::MySql>> {
    db::mysql(12).await
}

/// A fresh SQLite database file with a pool of 12 (always there).
pub async fn sqlite() -> Option<Db<sqlx::Sqlite>> {
    Some(db::sqlite(12).await)
}

/// An application's encryptor over `pool` with `keyring`.
pub fn encryptor<DB: Backend>(pool: &sqlx::Pool<DB>, keyring: &str) -> Encryptor {
    let provider = LocalKeyProvider::from_keyring_str(keyring).unwrap();
    let keys = KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    Encryptor::new(Arc::new(keys))
}

/// rowseal tables, the model tables, the registry, and a trigger that counts
/// every change of `people.rowseal_key_version` per row in `rotations`
/// (application writers in the tests never change it: they use
/// `update_fields`, which re-seals a row on the tenant-key version it has).
pub async fn prepare<DB: Backend>(db: &Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Person, _>(&db.pool).await.unwrap();
    schema::create_table::<Secret, _>(&db.pool).await.unwrap();
    schema::register::<Person, _>(&db.pool).await.unwrap();
    schema::register::<Secret, _>(&db.pool).await.unwrap();
    // The registry the tool reads gives back exactly what the models declare.
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        schema::registered_tables::<DB>(&mut conn).await.unwrap(),
        vec![
            schema::definition(Person::model()),
            schema::definition(Secret::model())
        ]
    );
    drop(conn);
    let stmts: Vec<&str> = match db.kind {
        "postgres" => vec![
            "CREATE TABLE rotations (id BIGINT PRIMARY KEY, n INT NOT NULL)",
            "CREATE FUNCTION count_rotation() RETURNS trigger AS $$ BEGIN
               IF NEW.rowseal_key_version <> OLD.rowseal_key_version THEN
                 INSERT INTO rotations (id, n) VALUES (NEW.id, 1)
                 ON CONFLICT (id) DO UPDATE SET n = rotations.n + 1;
               END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER people_rotation AFTER UPDATE ON people FOR EACH ROW EXECUTE FUNCTION count_rotation()",
        ],
        "mysql" => vec![
            "CREATE TABLE rotations (id BIGINT PRIMARY KEY, n INT NOT NULL)",
            "CREATE TRIGGER people_rotation AFTER UPDATE ON people FOR EACH ROW BEGIN
               IF NEW.rowseal_key_version <> OLD.rowseal_key_version THEN
                 INSERT INTO rotations (id, n) VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1;
               END IF; END",
        ],
        _ => vec![
            "CREATE TABLE rotations (id BIGINT PRIMARY KEY, n INT NOT NULL)",
            "CREATE TRIGGER people_rotation AFTER UPDATE ON people
               WHEN NEW.rowseal_key_version <> OLD.rowseal_key_version BEGIN
               INSERT INTO rotations (id, n) VALUES (NEW.id, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
             END",
        ],
    };
    for s in stmts {
        sqlx::raw_sql(s).execute(&db.pool).await.unwrap();
    }
}

/// Output of one `rowseal` run.
pub struct Run {
    pub code: Option<i32>,
    pub events: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn event(&self, name: &str) -> Option<&serde_json::Value> {
        self.events.iter().rev().find(|e| e["event"] == name)
    }
    pub fn all(&self, name: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }
}

pub fn command(url: &str, keyring: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_rowseal"));
    c.args(args)
        .env("DATABASE_URL", url)
        .env("ROWSEAL_LOCAL_KEYS", keyring)
        .env_remove("ROWSEAL_LOCAL_KEY_FILE")
        .env_remove("ROWSEAL_KMS_KEY_ID")
        .env_remove("ROWSEAL_CONFIG")
        .env_remove("ROWSEAL_KMS_RATE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

pub fn parse(code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> Run {
    let stdout = String::from_utf8_lossy(stdout).into_owned();
    let events = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Run {
        code,
        events,
        stdout,
        stderr: String::from_utf8_lossy(stderr).into_owned(),
    }
}

/// Runs `rowseal` to completion (stdout is a pipe: JSON lines).
pub async fn rowseal(url: &str, keyring: &str, args: &[&str]) -> Run {
    let out = command(url, keyring, args).output().await.unwrap();
    parse(out.status.code(), &out.stdout, &out.stderr)
}

/// Per-row rotation counts from the trigger.
pub async fn rotation_counts<DB: Backend>(db: &Db<DB>) -> HashMap<i64, i64>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use rowseal_sqlx::{DbRow, SqlType, Value};
    let rows = DB::fetch_all(&db.pool, "SELECT id, n FROM rotations", vec![])
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id = match r.read_value(0, SqlType::I64).unwrap() {
                Value::I64(v) => v,
                _ => panic!("id"),
            };
            let n = match r.read_value(1, SqlType::I64) {
                Ok(Value::I64(v)) => v,
                _ => match r.read_value(1, SqlType::I32).unwrap() {
                    Value::I32(v) => i64::from(v),
                    _ => panic!("n"),
                },
            };
            (id, n)
        })
        .collect()
}

/// A single integer from a query.
pub async fn scalar<DB: Backend>(db: &Db<DB>, sql: &str) -> i64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use rowseal_sqlx::{DbRow, SqlType, Value};
    let rows = DB::fetch_all(&db.pool, sql, vec![]).await.unwrap();
    match rows[0].read_value(0, SqlType::I64).unwrap() {
        Value::I64(v) => v,
        Value::Null(_) => 0,
        _ => panic!("not an integer"),
    }
}

/// Starts `rowseal args` and kills it with SIGKILL after a random pause of
/// `pause_ms` (from, to) milliseconds, counted once a job is running when
/// `after_job` (the first run of a scenario may be killed before its job
/// exists). Panics if the run ended by itself first: the table is too small
/// for the kill to land mid-job.
pub async fn kill_midway<DB: Backend>(
    db: &Db<DB>,
    keyring: &str,
    args: &[&str],
    after_job: bool,
    pause_ms: (u64, u64),
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut child = command(&db.url, keyring, args).spawn().unwrap();
    if after_job {
        for _ in 0..500 {
            let sql = "SELECT COUNT(*) FROM rowseal_jobs WHERE state = 'running'";
            if scalar(db, sql).await > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let pause = pause_ms.0 + rand::random::<u64>() % (pause_ms.1 - pause_ms.0);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    if let Some(status) = child.try_wait().unwrap() {
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "{} ended before the kill ({status}); make the table bigger: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
}
