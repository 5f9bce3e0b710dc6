#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The database indexes rowseal's own queries rely on, checked by `EXPLAIN`
//! on PostgreSQL, MariaDB and SQLite: a table made by `schema::create_table`,
//! a few thousand rows written by the library, then the plan of the exact
//! statement the library builds (never a copy of it) for a fetch by primary
//! key, each blind-index lookup (tenant-scoped and global, one value and an
//! `IN` list, one slot and both slots during an index-key rotation) and
//! `reindex_batch`'s read. Each plan must name the index the statement is
//! meant to use, so that a change to the DDL or to a query that loses an
//! index fails here; and once the index is dropped, the same check must fail
//! (what makes the assertions worth something).
//!
//! PostgreSQL runs with `enable_seqscan = off` on the explaining connection
//! (on small tables a sequential scan is a legitimate choice; with it off, a
//! lost index still shows one). MariaDB is explained as the application
//! runs it (no FORCE INDEX), after `ANALYZE TABLE`.
//!
//! Each test makes and drops its own database; an unreachable server is a
//! loud skip, or a failure when `CI=true`.

use std::sync::Arc;

use rowseal_core::{KeyHierarchy, KeyScope, LocalKeyProvider};
use rowseal_sqlx::{schema, Backend, DbRow, Encrypted, Encryptor, SqlxKeyStore, Value};
use rowseal_test_support::db;
use rowseal_test_support::explain::{assert_uses, execute, names, plan};

/// A tenant, a primary key, encrypted fields, a tenant-scoped blind index
/// and a global one.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "people", record_type = "person", tenant = tenant_id, primary_key = id)]
struct Person {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase"),
        blind_index(name = "login_idx", column = "login_bidx", bits = 64, scope = "global")
    )]
    email: String,
    #[rowseal(encrypt)]
    note: Option<String>,
}

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];
/// Enough rows that MariaDB's optimizer prefers the indexes it should.
const ROWS: i64 = 4000;

const FETCH_PK: &str = "fetch by primary key";
const TENANT_LOOKUP: &str = "tenant-scoped lookup";

fn encryptor<DB: Backend>(pool: &sqlx::Pool<DB>, keyring: &str) -> Encryptor {
    let provider = LocalKeyProvider::from_keyring_str(keyring).unwrap();
    let keys = KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    Encryptor::new(Arc::new(keys))
}

fn email(i: i64) -> String {
    format!("user{i}@example.com")
}

/// How the database names the primary key's index in a plan.
fn primary_key_index<DB: Backend>() -> &'static str {
    match DB::DIALECT {
        "postgres" => "people_pkey",
        "mysql" => "PRIMARY",
        // `id INTEGER PRIMARY KEY` is the rowid: `USING INTEGER PRIMARY KEY (rowid=?)`.
        _ => "rowid",
    }
}

/// The definition of `index` as the database stores it (`None` on MariaDB,
/// which keeps no index text).
async fn index_definition<DB: Backend>(conn: &mut DB::Connection, index: &str) -> Option<String> {
    let sql = match DB::DIALECT {
        "postgres" => "SELECT indexdef FROM pg_indexes WHERE indexname = $1",
        "sqlite" => "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
        _ => return None,
    };
    let rows = DB::__fetch_all_on(conn, sql, vec![Value::Text(index.to_owned())])
        .await
        .unwrap();
    let row = rows.first().unwrap_or_else(|| panic!("no index {index}"));
    Some(row.read_str(0).unwrap().to_owned())
}

/// The whole check on one database: `pool` a fresh database.
async fn explain_everything<DB: Backend>(pool: &sqlx::Pool<DB>) {
    schema::install(pool).await.unwrap();
    schema::create_table::<Person, _>(pool).await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let enc = encryptor(pool, &keyring);
    let people: Vec<Person> = (0..ROWS)
        .map(|i| Person {
            id: i,
            tenant_id: TENANTS[(i % 4) as usize].to_owned(),
            email: email(i),
            note: (i % 3 == 0).then(|| format!("note {i}")),
        })
        .collect();
    for chunk in people.chunks(500) {
        enc.insert_many(pool, chunk).await.unwrap();
    }

    let mut conn = pool.acquire().await.unwrap();
    let conn: &mut DB::Connection = &mut conn;
    match DB::DIALECT {
        "postgres" => {
            execute::<DB>(conn, "ANALYZE people").await;
            execute::<DB>(conn, "SET enable_seqscan = off").await;
        }
        "mysql" => execute::<DB>(conn, "ANALYZE TABLE people").await,
        _ => execute::<DB>(conn, "ANALYZE").await,
    }

    // The slot indexes are partial where the database has partial indexes.
    for index in [
        "people_email_idx",
        "people_email_idx_alt",
        "people_login_idx",
        "people_login_idx_alt",
    ] {
        if let Some(def) = index_definition::<DB>(conn, index).await {
            assert!(def.contains("IS NOT NULL"), "{index} is not partial: {def}");
        }
    }
    let kv = index_definition::<DB>(conn, "people_rowseal_kv").await;
    assert!(kv.as_ref().is_none_or(|d| !d.contains("WHERE")), "{kv:?}");

    // Fetch by primary key.
    let sql = Encryptor::__fetch_sql::<Person, DB>();
    let p = plan::<DB>(conn, &sql, vec![Value::I64(17), Value::Text("t1".into())]).await;
    assert_uses(FETCH_PK, &p, primary_key_index::<DB>());

    // Lookups outside a rotation: one slot.
    let (e5, e9) = (email(5), email(9));
    let (sql, binds) = enc
        .__find_by_sql::<Person, DB>(Some("t1"), "email_idx", &[&[e5.as_str()]])
        .await
        .unwrap()
        .unwrap();
    assert!(!sql.contains("_alt"), "one slot outside a rotation: {sql}");
    let p = plan::<DB>(conn, &sql, binds.clone()).await;
    assert_uses(TENANT_LOOKUP, &p, "people_email_idx");
    let tenant_lookup = (sql, binds);

    let (sql, binds) = enc
        .__find_by_sql::<Person, DB>(Some("t1"), "email_idx", &[&[e5.as_str()], &[e9.as_str()]])
        .await
        .unwrap()
        .unwrap();
    assert!(sql.contains(" IN ("), "{sql}");
    let p = plan::<DB>(conn, &sql, binds).await;
    assert_uses("tenant-scoped lookup of two values", &p, "people_email_idx");

    let (sql, binds) = enc
        .__find_by_sql::<Person, DB>(None, "login_idx", &[&[e5.as_str()]])
        .await
        .unwrap()
        .unwrap();
    let p = plan::<DB>(conn, &sql, binds).await;
    assert_uses("global lookup", &p, "people_login_idx");

    // An index-key rotation under way: lookups search both slots, and the
    // backfill reads the rows not on the new version yet.
    let admin = encryptor(pool, &keyring);
    let t1 = KeyScope::Tenant("t1".into());
    assert_eq!(admin.keys().begin_index_key_rotation(&t1).await.unwrap(), 2);
    assert_eq!(
        admin
            .keys()
            .begin_index_key_rotation(&KeyScope::Global)
            .await
            .unwrap(),
        2
    );
    let both = encryptor(pool, &keyring);
    let (sql, binds) = both
        .__reindex_batch_sql::<Person, DB>("t1", 300)
        .await
        .unwrap();
    let p = plan::<DB>(conn, &sql, binds).await;
    // The tenant's rows, through the index that starts with the tenant and
    // costs least to keep (the slot indexes cannot serve it: their rows
    // lack the NULLs the predicate looks for).
    assert_uses("reindex_batch's read", &p, "people_rowseal_kv");
    // Some rows on the new version, so that both slots hold values.
    assert_eq!(
        both.reindex_batch::<Person, _>(pool, "t1", 300)
            .await
            .unwrap(),
        300
    );
    execute::<DB>(
        conn,
        match DB::DIALECT {
            "mysql" => "ANALYZE TABLE people",
            _ => "ANALYZE",
        },
    )
    .await;

    let (sql, binds) = both
        .__find_by_sql::<Person, DB>(Some("t1"), "email_idx", &[&[e5.as_str()]])
        .await
        .unwrap()
        .unwrap();
    assert!(sql.contains("_alt"), "both slots during a rotation: {sql}");
    let p = plan::<DB>(conn, &sql, binds).await;
    assert_uses("tenant-scoped lookup, both slots", &p, "people_email_idx");
    assert_uses(
        "tenant-scoped lookup, both slots",
        &p,
        "people_email_idx_alt",
    );

    let (sql, binds) = both
        .__find_by_sql::<Person, DB>(None, "login_idx", &[&[e5.as_str()]])
        .await
        .unwrap()
        .unwrap();
    assert!(sql.contains("_alt"), "both slots during a rotation: {sql}");
    let p = plan::<DB>(conn, &sql, binds).await;
    assert_uses("global lookup, both slots", &p, "people_login_idx");
    assert_uses("global lookup, both slots", &p, "people_login_idx_alt");

    // The check fails once the index is gone: the same statement, planned
    // without it, names it no more.
    execute::<DB>(
        conn,
        match DB::DIALECT {
            "mysql" => "DROP INDEX people_email_idx ON people",
            _ => "DROP INDEX people_email_idx",
        },
    )
    .await;
    let (sql, binds) = tenant_lookup;
    let p = plan::<DB>(conn, &sql, binds).await;
    assert!(
        !names(&p, "people_email_idx"),
        "planned with a dropped index?\n{}",
        p.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plans_use_rowseal_indexes() {
    let Some(db) = db::postgres(4).await else {
        return;
    };
    explain_everything(&db.pool).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_plans_use_rowseal_indexes() {
    let Some(db) = db::mysql(4).await else {
        return;
    };
    explain_everything(&db.pool).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_plans_use_rowseal_indexes() {
    let db = db::sqlite(4).await;
    explain_everything(&db.pool).await;
    db.finish().await;
}
