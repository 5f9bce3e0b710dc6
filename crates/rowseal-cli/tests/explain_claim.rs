#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The plan of `rowseal rotate`'s claim query (derived mode: `<tenant> = ?
//! AND rowseal_key_version < ?`, `FOR UPDATE SKIP LOCKED` where the database
//! has it), on PostgreSQL, MariaDB and SQLite: it must be a range of the
//! `(tenant, rowseal_key_version)` index, `<table>_rowseal_kv`, so that each
//! batch finds the rows still to do without reading those already done. The
//! statement is the one the tool's scan builder makes
//! (`rowseal_cli::__rotation_claim_query`), for the table as the registry
//! describes it. Once the index is dropped, the check must fail.
//!
//! PostgreSQL runs with `enable_seqscan = off` on the explaining connection
//! (small tables are legitimately scanned); MariaDB is explained as the tool
//! runs it, after `ANALYZE TABLE`.

mod common;

use common::{encryptor, Person};
use rowseal_core::LocalKeyProvider;
use rowseal_sqlx::{schema, Backend};
use rowseal_test_support::explain::{execute, names, plan};

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];
const ROWS: i64 = 4000;

async fn claim_uses_key_version_index<DB: Backend>(pool: &sqlx::Pool<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    schema::install(pool).await.unwrap();
    schema::create_table::<Person, _>(pool).await.unwrap();
    schema::register::<Person, _>(pool).await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let enc = encryptor(pool, &keyring);
    let people: Vec<Person> = (0..ROWS)
        .map(|i| Person {
            id: i,
            tenant_id: TENANTS[(i % 4) as usize].to_owned(),
            name: format!("person {i}"),
            note: None,
            visits: i,
        })
        .collect();
    for chunk in people.chunks(500) {
        enc.insert_many(pool, chunk).await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    let conn: &mut DB::Connection = &mut conn;
    // A rotation to version 2 most of the way through: the statistics only
    // (nothing is decrypted here), so that the plan is the one a long
    // rotation runs, with a few rows left among many done.
    execute::<DB>(
        conn,
        "UPDATE people SET rowseal_key_version = 2 WHERE tenant_id <> 't1' OR id >= 400",
    )
    .await;
    match DB::DIALECT {
        "postgres" => {
            execute::<DB>(conn, "ANALYZE people").await;
            execute::<DB>(conn, "SET enable_seqscan = off").await;
        }
        "mysql" => execute::<DB>(conn, "ANALYZE TABLE people").await,
        _ => execute::<DB>(conn, "ANALYZE").await,
    }

    let def = schema::registered(pool, "people").await.unwrap().unwrap();
    let (sql, binds) =
        rowseal_cli::__rotation_claim_query(DB::DIALECT, &def, "t1", 2, 500).unwrap();
    assert!(sql.contains("rowseal_key_version"), "{sql}");
    let p = plan::<DB>(conn, &sql, binds.clone()).await;
    assert!(
        names(&p, "people_rowseal_kv"),
        "the rotation's claim query does not use people_rowseal_kv:\n{sql}\n{}",
        p.join("\n")
    );

    // Without the index, the same check fails.
    execute::<DB>(
        conn,
        match DB::DIALECT {
            "mysql" => "DROP INDEX people_rowseal_kv ON people",
            _ => "DROP INDEX people_rowseal_kv",
        },
    )
    .await;
    let p = plan::<DB>(conn, &sql, binds).await;
    assert!(
        !names(&p, "people_rowseal_kv"),
        "planned with a dropped index?\n{}",
        p.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotation_claim_uses_key_version_index() {
    let Some(db) = common::postgres().await else {
        return;
    };
    claim_uses_key_version_index(&db.pool).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_rotation_claim_uses_key_version_index() {
    let Some(db) = common::mysql().await else {
        return;
    };
    claim_uses_key_version_index(&db.pool).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rotation_claim_uses_key_version_index() {
    let Some(db) = common::sqlite().await else {
        return;
    };
    claim_uses_key_version_index(&db.pool).await;
    db.finish().await;
}
