#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! rowseal's migrator (`rowseal_sqlx::migrate`) on SQLite, PostgreSQL and
//! MariaDB: a fresh database, a second run, concurrent runs, databases made
//! before the migrator (by `schema::install` as it was, by the old fixed-version file
//! in the application's own sqlx migrations, by rowseal's first MySQL
//! tables), a database of a newer rowseal, and the application's own
//! `sqlx` migrations run before, after and around rowseal's. Each test makes
//! and drops its own database; an unreachable server is a loud skip, or a
//! failure when `CI=true`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::migrate::{self, TABLE};
use rowseal_sqlx::{
    schema, Backend, DbRow, Encrypted, Encryptor, ErrorKind, SqlType, SqlxKeyStore, Value,
};
use rowseal_test_support::db::{self, TestDb};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Executor, Pool};

/// A model, to show that an Encryptor works on the migrated tables.
#[derive(Encrypted, Debug, PartialEq)]
#[rowseal(table = "notes", record_type = "note", tenant = tenant_id, primary_key = id)]
struct Note {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    body: String,
}

/// rowseal's tables.
const ROWSEAL_TABLES: [&str; 4] = [
    "rowseal_keys",
    "rowseal_schema",
    "rowseal_jobs",
    "rowseal_key_health",
];

fn encryptor<DB: Backend>(pool: &Pool<DB>) -> Encryptor {
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let provider = LocalKeyProvider::from_keyring_str(&keyring).unwrap();
    Encryptor::new(Arc::new(KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    )))
}

/// Writes a note with a new encryptor and reads it back; returns the
/// encryptor (its keys are in `rowseal_keys`).
async fn note_round_trip<DB>(pool: &Pool<DB>, id: i64) -> Encryptor
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    schema::create_table::<Note, _>(pool).await.unwrap();
    let enc = encryptor(pool);
    let note = Note {
        id,
        tenant_id: "t1".into(),
        body: format!("note {id}"),
    };
    enc.insert(pool, &note).await.unwrap();
    assert_eq!(
        enc.fetch::<Note, _>(pool, "t1", &id).await.unwrap(),
        Some(note)
    );
    enc
}

/// The `column` of every row of `table`, ordered.
async fn int_column<DB>(pool: &Pool<DB>, table: &str, column: &str) -> Vec<i64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let sql = format!("SELECT {column} FROM {table} ORDER BY {column}");
    DB::fetch_all(pool, &sql, vec![])
        .await
        .unwrap()
        .iter()
        .map(|r| match r.read_value(0, SqlType::I64).unwrap() {
            Value::I64(v) => v,
            _ => panic!("{table}.{column}: not an integer"),
        })
        .collect()
}

async fn table_exists<DB>(pool: &Pool<DB>, table: &str) -> bool
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut sql = String::from(match DB::DIALECT {
        "sqlite" => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ",
        "postgres" => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ",
        _ => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ",
    });
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_optional(pool, &sql, vec![Value::Text(table.into())])
        .await
        .unwrap()
        .unwrap();
    row.read_value(0, SqlType::I64).unwrap() == Value::I64(1)
}

fn all_versions<DB: Backend>() -> Vec<i64> {
    migrate::migrations::<DB>()
        .iter()
        .map(|m| m.version)
        .collect()
}

/// rowseal's bookkeeping holds every version, once.
async fn assert_up_to_date<DB>(pool: &Pool<DB>)
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    assert_eq!(
        int_column(pool, TABLE, "version").await,
        all_versions::<DB>()
    );
    for t in ROWSEAL_TABLES {
        assert!(table_exists(pool, t).await, "{t}");
    }
}

/// An application's migrations folder (sqlx's `<version>_<description>.sql`
/// files), removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(rowseal_test_support::random_name());
        std::fs::create_dir_all(&dir).unwrap();
        Folder(dir)
    }

    fn add(&self, version: i64, description: &str, sql: &str) {
        std::fs::write(self.0.join(format!("{version}_{description}.sql")), sql).unwrap();
    }

    /// sqlx's migrator over the folder as it is now (what `sqlx::migrate!`
    /// embeds at build time).
    async fn migrator(&self) -> Migrator {
        Migrator::new(self.0.clone()).await.unwrap()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The application's migrations, later than rowseal's old fixed version
/// (20240101000000) and with timestamps of their own.
const ACCOUNTS: (i64, &str, &str) = (
    20250301090000,
    "accounts",
    "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL)",
);
const ACCOUNTS_EMAIL: (i64, &str, &str) = (
    20260115170000,
    "accounts_email",
    "ALTER TABLE accounts ADD COLUMN email VARCHAR(255)",
);

// ---------------------------------------------------------------------------
// The cases, for any database.

/// A fresh database: every migration applied and recorded, the tables
/// there, an Encryptor works on them.
async fn fresh_database<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    for t in ROWSEAL_TABLES {
        assert!(!table_exists(pool, t).await);
    }
    let applied = migrate::run(pool).await.unwrap();
    assert_eq!(applied, all_versions::<DB>());
    assert_eq!(migrate::latest::<DB>(), *applied.last().unwrap());
    assert_up_to_date(pool).await;
    let by = DB::fetch_all(pool, &format!("SELECT installed_by FROM {TABLE}"), vec![])
        .await
        .unwrap();
    for row in &by {
        assert_eq!(row.read_str(0).unwrap(), env!("CARGO_PKG_VERSION"));
    }
    note_round_trip(pool, 1).await;
    db.finish().await;
}

/// A second run changes nothing and applies nothing, also on a connection
/// rather than a pool.
async fn second_run_is_a_no_op<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    migrate::run(pool).await.unwrap();
    let enc = note_round_trip(pool, 1).await;
    assert_eq!(migrate::run(pool).await.unwrap(), Vec::<i64>::new());
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(migrate::run(&mut conn).await.unwrap(), Vec::<i64>::new());
    drop(conn);
    assert_up_to_date(pool).await;
    // The data and its keys are untouched.
    let back = enc.fetch::<Note, _>(pool, "t1", &1).await.unwrap().unwrap();
    assert_eq!(back.body, "note 1");
    db.finish().await;
}

/// Processes starting at once: several runs on their own connections, at
/// the same time, on a fresh database and then on one with a migration
/// pending (a new rowseal deployed to several processes): all succeed and
/// each migration is applied by exactly one.
async fn concurrent_runs<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    assert_eq!(
        race(pool).await,
        all_versions::<DB>(),
        "each migration applied once"
    );
    assert_up_to_date(pool).await;
    note_round_trip(pool, 1).await;

    let latest = migrate::latest::<DB>();
    DB::execute(
        pool,
        &format!("DELETE FROM {TABLE} WHERE version = {latest}"),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        race(pool).await,
        vec![latest],
        "the pending one applied once"
    );
    assert_up_to_date(pool).await;
    db.finish().await;
}

/// Runs the migrator on several connections at once; the versions they
/// applied, together.
async fn race<DB: Backend>(pool: &Pool<DB>) -> Vec<i64> {
    const RUNS: usize = 6;
    // Connections open before the runs start, so that they really race.
    let mut conns = Vec::new();
    for _ in 0..RUNS {
        conns.push(pool.acquire().await.unwrap());
    }
    let results = futures_util::future::join_all(conns.iter_mut().map(migrate::run)).await;
    let mut applied: Vec<i64> = Vec::new();
    for r in results {
        applied.extend(r.unwrap());
    }
    applied.sort_unstable();
    applied
}

/// Tables made before the migrator by `schema::install` as it was then
/// (what the examples and `rowseal init` ran at start-up: the first
/// migration's SQL on its own, recorded nowhere; `install` now runs the
/// migrator), with keys and rows in them: adopted, the data intact.
async fn adopts_installed_tables<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    let first: String = DB::migration_sql()
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in first.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        DB::execute(pool, statement, Vec::new()).await.unwrap();
    }
    let enc = note_round_trip(pool, 1).await;
    assert!(!table_exists(pool, TABLE).await);
    assert_eq!(migrate::run(pool).await.unwrap(), all_versions::<DB>());
    assert_up_to_date(pool).await;
    let back = enc.fetch::<Note, _>(pool, "t1", &1).await.unwrap().unwrap();
    assert_eq!(back.body, "note 1");
    enc.insert(
        pool,
        &Note {
            id: 2,
            tenant_id: "t1".into(),
            body: "note 2".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(migrate::run(pool).await.unwrap(), Vec::<i64>::new());
    db.finish().await;
}

/// Tables made by the old fixed-version file copied into the application's
/// own migrations (as its comment suggested): adopted by rowseal's
/// migrator, and the application's sqlx history still runs.
async fn adopts_the_old_file_in_the_applications_migrations<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    let app = Folder::new();
    // The file as it was shipped: migration 1 is it, byte for byte.
    app.add(20240101000000, "rowseal", DB::migration_sql());
    app.add(ACCOUNTS.0, ACCOUNTS.1, ACCOUNTS.2);
    app.migrator().await.run(pool).await.unwrap();
    let enc = note_round_trip(pool, 1).await;

    assert_eq!(migrate::run(pool).await.unwrap(), all_versions::<DB>());
    assert_up_to_date(pool).await;
    assert_eq!(
        enc.fetch::<Note, _>(pool, "t1", &1)
            .await
            .unwrap()
            .unwrap()
            .body,
        "note 1"
    );
    // The application's history is its own, and still checks out.
    app.add(ACCOUNTS_EMAIL.0, ACCOUNTS_EMAIL.1, ACCOUNTS_EMAIL.2);
    app.migrator().await.run(pool).await.unwrap();
    assert_eq!(
        int_column(pool, "_sqlx_migrations", "version").await,
        vec![20240101000000, ACCOUNTS.0, ACCOUNTS_EMAIL.0]
    );
    db.finish().await;
}

/// A database that records a version this rowseal does not know (a newer
/// rowseal migrated it): refused with a configuration error naming it,
/// before anything is applied; the lock is released (another connection
/// runs at once once the version is gone).
async fn refuses_a_newer_database<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    migrate::run(pool).await.unwrap();
    let mut insert = format!("INSERT INTO {TABLE} (version, description, installed_by) VALUES (");
    for n in 1..=3 {
        if n > 1 {
            insert.push_str(", ");
        }
        DB::push_placeholder(&mut insert, n);
    }
    insert.push(')');
    let future = migrate::latest::<DB>() + 1000;
    DB::execute(
        pool,
        &insert,
        vec![
            Value::I64(future),
            Value::Text("from_the_future".into()),
            Value::Text("9.9.9".into()),
        ],
    )
    .await
    .unwrap();
    // A migration this rowseal would apply if it went on.
    DB::execute(
        pool,
        &format!("DELETE FROM {TABLE} WHERE version = 1"),
        vec![],
    )
    .await
    .unwrap();
    DB::execute(pool, "DROP TABLE rowseal_jobs", vec![])
        .await
        .unwrap();

    let mut first = pool.acquire().await.unwrap();
    let err = migrate::run(&mut first).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&future.to_string()) && message.contains("9.9.9"),
        "{message}"
    );
    assert!(!table_exists(pool, "rowseal_jobs").await, "nothing applied");

    // `first` stays checked out: the next run is on another connection.
    DB::execute(
        pool,
        &format!("DELETE FROM {TABLE} WHERE version = {future}"),
        vec![],
    )
    .await
    .unwrap();
    let mut second = pool.acquire().await.unwrap();
    let applied = tokio::time::timeout(Duration::from_secs(30), migrate::run(&mut second))
        .await
        .expect("the lock was released after the refusal")
        .unwrap();
    assert_eq!(applied, vec![1]);
    drop((first, second));
    assert_up_to_date(pool).await;
    db.finish().await;
}

/// The application's sqlx migrations first, then rowseal's, then a new
/// migration of the application and both again: both histories intact,
/// neither holding the other's versions.
async fn application_migrations_first<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    let app = Folder::new();
    app.add(ACCOUNTS.0, ACCOUNTS.1, ACCOUNTS.2);
    app.migrator().await.run(pool).await.unwrap();
    assert_eq!(migrate::run(pool).await.unwrap(), all_versions::<DB>());
    app.add(ACCOUNTS_EMAIL.0, ACCOUNTS_EMAIL.1, ACCOUNTS_EMAIL.2);
    app.migrator().await.run(pool).await.unwrap();
    assert_eq!(migrate::run(pool).await.unwrap(), Vec::<i64>::new());
    both_histories_intact(pool).await;
    db.finish().await;
}

/// rowseal's migrations first, then the application's (twice, as it grows):
/// the same result.
async fn rowseal_migrations_first<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    let app = Folder::new();
    assert_eq!(migrate::run(pool).await.unwrap(), all_versions::<DB>());
    app.add(ACCOUNTS.0, ACCOUNTS.1, ACCOUNTS.2);
    app.migrator().await.run(pool).await.unwrap();
    app.add(ACCOUNTS_EMAIL.0, ACCOUNTS_EMAIL.1, ACCOUNTS_EMAIL.2);
    app.migrator().await.run(pool).await.unwrap();
    assert_eq!(migrate::run(pool).await.unwrap(), Vec::<i64>::new());
    both_histories_intact(pool).await;
    db.finish().await;
}

async fn both_histories_intact<DB: Backend>(pool: &Pool<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    assert_eq!(
        int_column(pool, "_sqlx_migrations", "version").await,
        vec![ACCOUNTS.0, ACCOUNTS_EMAIL.0]
    );
    assert_up_to_date(pool).await;
    // The application's tables as its migrations made them.
    DB::execute(
        pool,
        "INSERT INTO accounts (id, name, email) VALUES (1, 'ada', 'ada@example.com')",
        vec![],
    )
    .await
    .unwrap();
    note_round_trip(pool, 1).await;
}

/// One history: rowseal's migrations copied into the application's folder
/// under versions of its own, applied by sqlx's migrator alone; rowseal's
/// migrator then adopts the database too.
async fn one_history<DB: Backend>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Connection: Migrate,
{
    let pool = &db.pool;
    let app = Folder::new();
    app.add(ACCOUNTS.0, ACCOUNTS.1, ACCOUNTS.2);
    let now = 20261201120000_i64;
    for m in migrate::migrations::<DB>() {
        app.add(
            now + m.version,
            &format!("rowseal_{}", m.description),
            m.sql,
        );
    }
    app.migrator().await.run(pool).await.unwrap();
    let mut expected = vec![ACCOUNTS.0];
    expected.extend(all_versions::<DB>().iter().map(|v| now + v));
    assert_eq!(
        int_column(pool, "_sqlx_migrations", "version").await,
        expected
    );
    assert!(!table_exists(pool, TABLE).await);
    note_round_trip(pool, 1).await;
    // Both ways on one database: harmless.
    assert_eq!(migrate::run(pool).await.unwrap(), all_versions::<DB>());
    assert_up_to_date(pool).await;
    app.migrator().await.run(pool).await.unwrap();
    db.finish().await;
}

macro_rules! on_each_database {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(rowseal_test_support::db::sqlite(8).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = rowseal_test_support::db::postgres(8).await else { return };
                    super::$case(db).await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = rowseal_test_support::db::mysql(8).await else { return };
                    super::$case(db).await;
                }
            )*
        }
    };
}

on_each_database!(
    fresh_database,
    second_run_is_a_no_op,
    concurrent_runs,
    adopts_installed_tables,
    adopts_the_old_file_in_the_applications_migrations,
    refuses_a_newer_database,
    application_migrations_first,
    rowseal_migrations_first,
    one_history,
);

// ---------------------------------------------------------------------------
// MariaDB/MySQL: the tables of rowseal's first version.

/// `rowseal_keys` as rowseal's first version made it on MySQL/MariaDB
/// (`migrations/mysql/20240101000000_rowseal.sql` at commit 69add3f, before
/// the tenant column compared bytes): a real older database.
const MYSQL_V1_KEYS: &str = "CREATE TABLE IF NOT EXISTS rowseal_keys (
    purpose     VARCHAR(16)  NOT NULL,
    scope_kind  VARCHAR(16)  NOT NULL,
    tenant      VARCHAR(255) NOT NULL DEFAULT '',
    version     BIGINT       NOT NULL,
    wrapped     VARBINARY(4096),
    root_key_id TEXT,
    state       VARCHAR(16)  NOT NULL,
    created_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (purpose, scope_kind, tenant, version)
)";

/// Migration 2 upgrades it: `ACME` and `acme` get keys of their own, the
/// keys already there stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_upgrades_the_first_versions_keys_table() {
    let Some(db) = db::mysql(2).await else { return };
    let pool = &db.pool;
    sqlx::query(MYSQL_V1_KEYS).execute(pool).await.unwrap();
    let insert = |tenant: &'static str| {
        sqlx::query(
            "INSERT INTO rowseal_keys (purpose, scope_kind, tenant, version, wrapped, root_key_id, state) \
             VALUES ('tenant', 'tenant', ?, 1, x'01', 'local:1', 'active')",
        )
        .bind(tenant)
        .execute(pool)
    };
    insert("ACME").await.unwrap();
    // The old table really is the case-insensitive one.
    let err = insert("acme").await.unwrap_err();
    assert!(
        err.as_database_error().unwrap().is_unique_violation(),
        "{err}"
    );

    assert_eq!(migrate::run(pool).await.unwrap(), vec![1, 2, 3]);
    let collation: String = sqlx::query_scalar(
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rowseal_keys' AND COLUMN_NAME = 'tenant'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(collation, "utf8mb4_bin");
    insert("acme").await.unwrap();
    // (A `_bin` column reads as bytes: sqlx sees VARBINARY.)
    let tenants: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT tenant FROM rowseal_keys ORDER BY BINARY tenant")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(tenants, [b"ACME".to_vec(), b"acme".to_vec()]);
    for t in ROWSEAL_TABLES {
        assert!(table_exists(pool, t).await, "{t}");
    }
    db.finish().await;
}
