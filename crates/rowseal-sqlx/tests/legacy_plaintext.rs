#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Adopting a table of plaintext rows: `plaintext_column` fields read either
//! form, writes leave no plaintext, `schema::adopt_table_sql` adds rowseal's
//! columns to the existing table. On SQLite, PostgreSQL and MariaDB (each
//! test makes and drops its own database; an unreachable server is a loud
//! skip, or a failure when `CI=true`).

mod suite;

use rowseal_sqlx::{
    schema, Backend, DbRow, Encrypted, Encryptor, Error, ReadModel, SqlType, Value,
};
use rowseal_test_support::db::{self, TestDb};

/// The application's model after adoption: `email` and `phone` migrate from
/// their legacy plaintext columns into `email_ct` and `phone_ct`.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "legacy_patients", record_type = "patient", tenant = tenant_id, primary_key = id, bind_primary_key)]
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
    #[rowseal(encrypt, column = "age_ct", plaintext_column = "age")]
    age: i64,
    visits: i64,
}

struct Cx<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    enc: Encryptor,
    db: TestDb<DB>,
}

/// The legacy table, as the application had it before rowseal (SQLite cannot
/// drop a NOT NULL later, so its legacy columns are nullable from the start).
fn legacy_ddl(dialect: &str) -> String {
    let not_null = if dialect == "sqlite" { "" } else { " NOT NULL" };
    format!(
        "CREATE TABLE legacy_patients (id BIGINT PRIMARY KEY, tenant_id VARCHAR(255) NOT NULL, \
         email VARCHAR(255){not_null}, phone TEXT, age BIGINT{not_null}, visits BIGINT NOT NULL)"
    )
}

async fn prepare<DB: Backend>(db: TestDb<DB>) -> Cx<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let pool = db.pool.clone();
    schema::install(&pool).await.unwrap();
    DB::execute(&pool, &legacy_ddl(DB::DIALECT), vec![])
        .await
        .unwrap();
    // Plaintext rows written by the application before it adopted rowseal.
    for (id, tenant, email, phone, age) in [
        (1, "t1", "ada@example.com", Some("555-0101"), 36),
        (2, "t1", "bob@example.com", None, 41),
        (3, "t2", "cy@example.com", Some("555-0103"), 29),
    ] {
        insert_legacy(&pool, id, tenant, email, phone, age).await;
    }
    schema::adopt_table::<Patient, _>(&pool).await.unwrap();
    schema::register::<Patient, _>(&pool).await.unwrap();
    let keyring = rowseal_core::LocalKeyProvider::generate_keyring().to_string();
    let enc = suite::encryptor(&pool, &keyring);
    Cx { pool, enc, db }
}

async fn insert_legacy<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    id: i64,
    tenant: &str,
    email: &str,
    phone: Option<&str>,
    age: i64,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from(
        "INSERT INTO legacy_patients (id, tenant_id, email, phone, age, visits) VALUES (",
    );
    for i in 1..=6 {
        if i > 1 {
            sql.push_str(", ");
        }
        DB::push_placeholder(&mut sql, i);
    }
    sql.push(')');
    DB::execute(
        pool,
        &sql,
        vec![
            Value::I64(id),
            Value::Text(tenant.into()),
            Value::Text(email.into()),
            phone.map_or(Value::Null(SqlType::Text), |p| Value::Text(p.into())),
            Value::I64(age),
            Value::I64(0),
        ],
    )
    .await
    .unwrap();
}

impl<DB: sqlx::Database> Cx<DB> {
    async fn finish(self) {
        self.db.finish().await;
    }
}

/// The raw legacy and rowseal columns of a row, by plain SQL.
#[derive(Debug)]
struct Raw {
    email: Option<String>,
    phone: Option<String>,
    age: Option<i64>,
    email_ct: bool,
    header: bool,
    key_version: Option<i64>,
}

async fn raw<DB: Backend>(pool: &sqlx::Pool<DB>, id: i64) -> Raw
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from(
        "SELECT email, phone, age, email_ct, rowseal_header, rowseal_key_version FROM legacy_patients WHERE id = ",
    );
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_optional(pool, &sql, vec![Value::I64(id)])
        .await
        .unwrap()
        .unwrap();
    let text = |i| match row.read_value(i, SqlType::Text).unwrap() {
        Value::Text(s) => Some(s),
        _ => None,
    };
    let int = |i| match row.read_value(i, SqlType::I64).unwrap() {
        Value::I64(v) => Some(v),
        _ => None,
    };
    Raw {
        email: text(0),
        phone: text(1),
        age: int(2),
        email_ct: row.read_opt_bytes(3).unwrap().is_some(),
        header: row.read_opt_bytes(4).unwrap().is_some(),
        key_version: int(5),
    }
}

fn patient(id: i64, tenant: &str, email: &str, phone: Option<&str>, age: i64) -> Patient {
    Patient {
        id,
        tenant_id: tenant.into(),
        email: email.into(),
        phone: phone.map(Into::into),
        age,
        visits: 0,
    }
}

// ---- cases -------------------------------------------------------------

/// Legacy rows, encrypted rows and NULLs all read back through every read
/// path: fetch, the user's own query via the select list, and streams.
async fn reads_both_forms<DB: Backend>(cx: &Cx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    // Legacy rows: no header, no ciphertext.
    let r = raw(&cx.pool, 1).await;
    assert!(!r.header && !r.email_ct && r.key_version.is_none());
    let got = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t1", &1)
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(patient(1, "t1", "ada@example.com", Some("555-0101"), 36))
    );
    let got = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t1", &2)
        .await
        .unwrap();
    assert_eq!(got, Some(patient(2, "t1", "bob@example.com", None, 41)));
    // Tenant-scoped as ever.
    assert!(cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t2", &1)
        .await
        .unwrap()
        .is_none());

    // A new row through rowseal: encrypted, the legacy columns NULL.
    let new = patient(10, "t1", "dee@example.com", None, 50);
    cx.enc.insert(&cx.pool, &new).await.unwrap();
    let r = raw(&cx.pool, 10).await;
    assert!(r.header && r.email_ct);
    assert_eq!((r.email, r.phone, r.age), (None, None, None));
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &10)
            .await
            .unwrap(),
        Some(new.clone())
    );

    // The user's own query over a mix of both forms.
    let mut sql = format!(
        "SELECT {} FROM legacy_patients WHERE tenant_id = ",
        Encryptor::select_list::<Patient, DB>()
    );
    DB::push_placeholder(&mut sql, 1);
    sql.push_str(" ORDER BY id");
    let rows = DB::fetch_all(&cx.pool, &sql, vec![Value::Text("t1".into())])
        .await
        .unwrap();
    let all: Vec<Patient> = cx
        .enc
        .decrypt_all(rowseal_sqlx::TenantScope::Any, &rows)
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![
            patient(1, "t1", "ada@example.com", Some("555-0101"), 36),
            patient(2, "t1", "bob@example.com", None, 41),
            new,
        ]
    );

    // fetch_all and fetch_stream (the pipelined paths) read both forms too.
    let own = format!(
        "SELECT {} FROM legacy_patients WHERE tenant_id = 't1' ORDER BY id",
        Encryptor::select_list::<Patient, DB>()
    );
    let fetched: Vec<Patient> = cx
        .enc
        .fetch_all(
            rowseal_sqlx::TenantScope::Any,
            sqlx::query::<DB>(&own),
            &cx.pool,
        )
        .await
        .unwrap();
    assert_eq!(fetched, all);
    let streamed: Vec<Patient> =
        futures_util::TryStreamExt::try_collect(cx.enc.fetch_stream::<Patient, _, _>(
            rowseal_sqlx::TenantScope::Any,
            sqlx::query::<DB>(&own),
            &cx.pool,
        ))
        .await
        .unwrap();
    assert_eq!(streamed, all);

    // A row with NULL in both forms of a field that is not an Option is a
    // typed error naming the column, not a panic.
    // (The legacy column accepts NULL since adoption.)
    let sql = "UPDATE legacy_patients SET age = NULL WHERE id = 3";
    DB::execute(&cx.pool, sql, vec![]).await.unwrap();
    match cx.enc.fetch::<Patient, _>(&cx.pool, "t2", &3).await {
        Err(Error::Decode { column, .. }) => assert_eq!(column, "age_ct"),
        other => panic!("expected a decode error, got {other:?}"),
    }

    // A ciphertext without a key header is refused, not read as plaintext.
    let ct_sql =
        "UPDATE legacy_patients SET email_ct = rowseal_header, rowseal_header = NULL WHERE id = 10";
    DB::execute(&cx.pool, ct_sql, vec![]).await.unwrap();
    match cx.enc.fetch::<Patient, _>(&cx.pool, "t1", &10).await {
        Err(Error::Field { .. }) => {}
        other => panic!("expected a decrypt error, got {other:?}"),
    }
}

/// Every write path leaves the legacy columns NULL: update_fields on a
/// legacy row (which gets a key header), a full update, and lookups.
async fn writes_leave_no_plaintext<DB: Backend>(cx: &Cx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    // One field of a legacy row: the row gets a header, and is sealed whole
    // (a write binds all of a row's encrypted fields), so every legacy
    // column of the row is emptied, not only the updated field's.
    let mut p = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t1", &1)
        .await
        .unwrap()
        .unwrap();
    p.email = "ada@new.example".into();
    cx.enc
        .update_fields(&cx.pool, &p, &["email"])
        .await
        .unwrap();
    let r = raw(&cx.pool, 1).await;
    assert!(r.header && r.email_ct && r.key_version.is_some());
    assert_eq!(r.email, None, "the updated field's plaintext is gone");
    assert_eq!(r.phone, None, "the other fields moved to their ciphertexts");
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &1)
            .await
            .unwrap(),
        Some(p.clone())
    );
    // A second field of the same row: the row is re-sealed again.
    p.phone = Some("555-0199".into());
    cx.enc
        .update_fields(&cx.pool, &p, &["phone"])
        .await
        .unwrap();
    let r2 = raw(&cx.pool, 1).await;
    assert_eq!(r2.phone, None);
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &1)
            .await
            .unwrap(),
        Some(p.clone())
    );

    // A plain field of a legacy row: no header needed, the row stays legacy.
    let mut q = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t1", &2)
        .await
        .unwrap()
        .unwrap();
    q.visits = 7;
    cx.enc
        .update_fields(&cx.pool, &q, &["visits"])
        .await
        .unwrap();
    assert!(!raw(&cx.pool, 2).await.header);
    // A full update: everything encrypted, every legacy column NULL.
    q.age = 42;
    cx.enc.update(&cx.pool, &q).await.unwrap();
    let r = raw(&cx.pool, 2).await;
    assert!(r.header);
    assert_eq!((r.email, r.phone, r.age), (None, None, None));
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &2)
            .await
            .unwrap(),
        Some(q)
    );

    // No plaintext of a rewritten row anywhere in the table.
    let sql = "SELECT * FROM legacy_patients WHERE id IN (1, 2) ORDER BY id";
    let rows = DB::fetch_all(&cx.pool, sql, vec![]).await.unwrap();
    for row in &rows {
        for i in 0..sqlx::Row::columns(row).len() {
            let cell: Vec<u8> = if let Ok(b) = row.read_bytes(i) {
                b.to_vec()
            } else if let Ok(s) = row.read_str(i) {
                s.as_bytes().to_vec()
            } else {
                continue;
            };
            for secret in ["ada@", "bob@", "555-01"] {
                assert!(
                    !cell.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "plaintext {secret} left in column {i}"
                );
            }
        }
    }
}

/// Blind-index lookups find a legacy row once it is encrypted (the documented
/// rule: the index columns of a legacy row are NULL until then).
async fn lookups_after_encryption<DB: Backend>(cx: &Cx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let found = Patient::find_by_email(&cx.enc, &cx.pool, "t2", "cy@example.com")
        .await
        .unwrap();
    assert!(found.is_empty(), "legacy rows have no index value yet");
    let p = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t2", &3)
        .await
        .unwrap()
        .unwrap();
    cx.enc
        .update_fields(&cx.pool, &p, &["email"])
        .await
        .unwrap();
    let found = Patient::find_by_email(&cx.enc, &cx.pool, "t2", " CY@example.com")
        .await
        .unwrap();
    assert_eq!(found, vec![p]);
}

/// The DDL adds only nullable columns, and the registry records the legacy
/// columns for the command-line tool.
async fn adoption_ddl_and_registry<DB: Backend>(cx: &Cx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let stmts = schema::adopt_table_sql::<Patient, DB>();
    assert!(stmts
        .iter()
        .all(|s| !s.contains("ADD COLUMN") || !s.contains("NOT NULL")));
    assert!(stmts.iter().any(|s| s.contains("email_ct")));
    // The entry reads back equal to the model's schema (the tool's view).
    let entry = schema::registered(&cx.pool, "legacy_patients")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry, schema::definition(Patient::model()));
    let def = serde_json::to_value(entry).unwrap();
    let email = def["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["column"] == "email_ct")
        .unwrap();
    assert_eq!(email["plaintext_column"], "email");
    assert_eq!(email["plaintext_type"], "text");
    let visits = def["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["column"] == "visits")
        .unwrap();
    assert!(visits["plaintext_column"].is_null());

    // The same model on a fresh database (no legacy data): create_table
    // makes the legacy columns too (nullable), and rows round-trip.
    DB::execute(&cx.pool, "DROP TABLE legacy_patients", vec![])
        .await
        .unwrap();
    schema::create_table::<Patient, _>(&cx.pool).await.unwrap();
    let p = patient(7, "t1", "new@example.com", Some("555-0107"), 30);
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &7)
            .await
            .unwrap(),
        Some(p)
    );
    let r = raw(&cx.pool, 7).await;
    assert_eq!((r.email, r.phone, r.age), (None, None, None));
}

// ---- databases -----------------------------------------------------------

async fn sqlite() -> Option<Cx<sqlx::Sqlite>> {
    let db = db::sqlite_with(4, |o| o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)).await;
    Some(prepare(db).await)
}

async fn postgres() -> Option<Cx<sqlx::Postgres>> {
    Some(prepare(db::postgres(4).await?).await)
}

async fn mysql() -> Option<Cx<sqlx::MySql>> {
    Some(prepare(db::mysql(4).await?).await)
}

macro_rules! legacy_cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            legacy_cases!(@db $case, sqlite, postgres, mysql);
        }
    )*};
    (@db $case:ident, $($db:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $db() {
            use futures_util::FutureExt as _;
            let Some(cx) = super::$db().await else { return };
            // Drop the test database even when the case fails.
            let outcome = std::panic::AssertUnwindSafe(super::$case(&cx))
                .catch_unwind()
                .await;
            cx.finish().await;
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        }
    )*};
}

legacy_cases!(
    reads_both_forms,
    writes_leave_no_plaintext,
    lookups_after_encryption,
    adoption_ddl_and_registry,
);
