#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `rowseal verify` checks blind indexes: every index value is recomputed
//! from the decrypted (or plain) covered fields under the index-key version
//! stored beside it, on SQLite, PostgreSQL and MariaDB; mismatches are
//! reported by primary key and index name, never by value; an index with a
//! custom Rust normalizer is reported as not checked.

mod common;

use common::Db;
use rowseal_core::{KeyScope, LocalKeyProvider};
use rowseal_sqlx::{schema, Backend, Encrypted};

/// A custom step: verify cannot run it.
fn strip_plus(s: &str) -> String {
    s.split('+').next().unwrap_or(s).to_owned()
}

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "members",
    record_type = "member",
    tenant = tenant_id,
    primary_key = id,
    compound_index(name = "city_level_idx", fields(city = "trim,lowercase", level), bits = 40)
)]
struct Member {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
    /// Bytes storage (more than 64 bits), global scope.
    #[rowseal(
        encrypt,
        blind_index(name = "ssn_idx", bits = 96, normalize = "digits", scope = "global")
    )]
    ssn: Option<String>,
    #[rowseal(encrypt)]
    city: String,
    /// A plain column in a compound index.
    level: i64,
    #[rowseal(
        encrypt,
        blind_index(name = "alias_idx", bits = 32, normalize_with = strip_plus)
    )]
    alias: Option<String>,
}

const N: i64 = 60;

fn member(id: i64) -> Member {
    Member {
        id,
        tenant_id: format!("t{}", id % 3),
        email: format!("  Member{id}@Example.com "),
        ssn: (id % 4 != 0).then(|| format!("{:03}-{:02}-{:04}", id, id % 100, id * 7)),
        city: format!(" City {} ", id % 5),
        level: id % 7,
        alias: (id % 2 == 0).then(|| format!("m{id}+x")),
    }
}

/// The value column of an index, from the registry (so the test follows the
/// storage layout the library records).
async fn index_column<DB: Backend>(db: &Db<DB>, index: &str) -> String
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let def = schema::registered(&db.pool, "members")
        .await
        .unwrap()
        .unwrap();
    def.blind_indexes
        .into_iter()
        .find(|i| i.name == index)
        .unwrap()
        .column
}

async fn scenario<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let init = common::rowseal(&db.url, &keyring, &["init"]).await;
    assert_eq!(init.code, Some(0), "{}", init.stderr);
    schema::create_table::<Member, _>(&db.pool).await.unwrap();
    schema::register::<Member, _>(&db.pool).await.unwrap();
    let enc = common::encryptor(&db.pool, &keyring);
    let rows: Vec<Member> = (1..=N).map(member).collect();
    enc.insert_many(&db.pool, &rows).await.unwrap();

    // Tenant t1's index key is being rotated and half of its rows have their
    // new-version value: verify checks each slot under the version stored
    // beside its value.
    enc.keys()
        .begin_index_key_rotation(&KeyScope::Tenant("t1".into()))
        .await
        .unwrap();
    let app = common::encryptor(&db.pool, &keyring);
    let rebuilt = app
        .reindex_batch::<Member, _>(&db.pool, "t1", 10)
        .await
        .unwrap();
    assert_eq!(rebuilt, 10);

    let run = common::rowseal(&db.url, &keyring, &["verify"]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, run.stdout);
    let done = run.event("done").unwrap().clone();
    assert_eq!(done["failures"], 0, "{done}");
    assert_eq!(done["index_failures"], 0);
    let stats = |d: &serde_json::Value, name: &str| -> serde_json::Value {
        d["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["index"] == name)
            .unwrap_or_else(|| panic!("no stats for {name}: {d}"))
            .clone()
    };
    // Every row's value is recomputed (NULL fields too: the stored value
    // must then be NULL).
    // The rebuilt rows of t1 hold a value in each slot (old and pending
    // version), both checked.
    for (name, values) in [
        ("email_idx", N + 10),
        ("ssn_idx", N),
        ("city_level_idx", N + 10),
    ] {
        assert_eq!(
            stats(&done, name)["values_checked"],
            values,
            "{name}: {done}"
        );
        assert_eq!(stats(&done, name)["rows_not_indexed"], 0, "{name}");
    }
    // The custom normalizer is not checked, and says so.
    let skipped = run.event("index_not_checked").unwrap();
    assert_eq!(skipped["index"], "alias_idx");
    assert!(skipped["reason"]
        .as_str()
        .unwrap()
        .contains("normalize_with"));
    assert_eq!(done["indexes_not_checked"][0]["index"], "alias_idx");
    assert!(done["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["index"] != "alias_idx"));

    // Tampering: a wrong value, a missing value, a changed plain covered
    // column; and a row from before the index (no value, no version) is
    // "not indexed", not a failure.
    let email = index_column(&db, "email_idx").await;
    let ssn = index_column(&db, "ssn_idx").await;
    for sql in [
        format!("UPDATE members SET {email} = {email} + 1 WHERE id = 5"),
        format!("UPDATE members SET {ssn} = NULL WHERE id = 7"),
        "UPDATE members SET level = level + 1 WHERE id = 8".to_owned(),
        // Another row's value (same tenant) is caught too.
        format!("UPDATE members SET {email} = (SELECT v FROM (SELECT {email} AS v FROM members WHERE id = 10) AS x) WHERE id = 13"),
    ] {
        sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
    }
    let run = common::rowseal(&db.url, &keyring, &["verify"]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stderr, run.stdout);
    let failures: Vec<(String, String)> = run
        .all("failure")
        .iter()
        .map(|f| {
            (
                f["primary_key"].as_str().unwrap().to_owned(),
                f["index"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut expected = vec![
        ("5".to_owned(), "email_idx".to_owned()),
        ("7".to_owned(), "ssn_idx".to_owned()),
        ("8".to_owned(), "city_level_idx".to_owned()),
        ("13".to_owned(), "email_idx".to_owned()),
    ];
    let mut got = failures.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{}", run.stdout);
    let done = run.event("done").unwrap();
    assert_eq!(done["index_failures"], 4);
    for id in [5, 7, 8, 13] {
        let m = member(id);
        assert!(
            !run.stdout.contains(m.email.trim()),
            "no value in the report"
        );
        assert!(
            !run.stdout.contains(m.city.trim()),
            "no value in the report"
        );
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_blind_indexes_sqlite() {
    if let Some(db) = common::sqlite().await {
        scenario(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_blind_indexes_postgres() {
    if let Some(db) = common::postgres().await {
        scenario(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_blind_indexes_mariadb() {
    if let Some(db) = common::mysql().await {
        scenario(db).await;
    }
}
