#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `rowseal reindex`: blind-index keys rotated while an application keeps
//! writing and looking rows up, on SQLite, PostgreSQL and MariaDB. Every
//! lookup during and after the job finds its row; every scope ends on the new
//! version with the old one retired and its values cleared; `verify` passes;
//! a job killed with
//! SIGKILL while it waits is resumed without waiting again or creating
//! another version; an index the tool cannot compute refuses the rotation.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Db;
use rowseal_core::{CacheConfig, KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Backend, Encrypted, Encryptor, SqlxKeyStore};

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "contacts",
    record_type = "contact",
    tenant = tenant_id,
    primary_key = id,
    compound_index(name = "city_level_idx", fields(city, level), bits = 40, normalize = "trim,lowercase")
)]
struct Contact {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 48, normalize = "trim,lowercase", unique)
    )]
    email: String,
    #[rowseal(
        encrypt,
        blind_index(name = "phone_idx", bits = 80, normalize = "digits", scope = "global")
    )]
    phone: Option<String>,
    #[rowseal(encrypt)]
    city: String,
    level: i64,
}

fn contact(id: i64) -> Contact {
    Contact {
        id,
        tenant_id: format!("t{}", id % 3),
        email: format!("Contact{id}@Example.com"),
        phone: (id % 5 != 0).then(|| format!("+1 (555) {id:07}")),
        city: format!("City {}", id % 4),
        level: id % 3,
    }
}

/// An application process whose key caches live `ttl`.
fn app<DB: Backend>(pool: &sqlx::Pool<DB>, keyring: &str, ttl: Duration) -> Encryptor {
    let provider = LocalKeyProvider::from_keyring_str(keyring).unwrap();
    Encryptor::new(Arc::new(KeyHierarchy::with_cache_config(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
        CacheConfig {
            max_entries: 10_000,
            ttl,
        },
    )))
}

async fn find_one<'c, DB: Backend>(enc: &Encryptor, pool: &sqlx::Pool<DB>, c: &Contact) -> bool
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let by_email = Contact::find_by_email(enc, pool, &c.tenant_id, &c.email.to_uppercase())
        .await
        .unwrap();
    let ok_email = by_email.len() == 1 && by_email[0].id == c.id;
    let ok_phone = match &c.phone {
        None => true,
        Some(p) => Contact::find_by_phone(enc, pool, p)
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == c.id),
    };
    ok_email && ok_phone
}

/// Index-key versions and states per scope, as `scope:version:state`.
async fn key_states<DB: Backend>(db: &Db<DB>) -> Vec<String>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use rowseal_sqlx::DbRow;
    let rows = DB::fetch_all(
        &db.pool,
        "SELECT tenant, version, state FROM rowseal_keys WHERE purpose = 'index' ORDER BY scope_kind, tenant, version",
        vec![],
    )
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let v = match r.read_value(1, rowseal_sqlx::SqlType::I64).unwrap() {
                rowseal_sqlx::Value::I64(v) => v,
                _ => -1,
            };
            format!("{}:{v}:{}", r.read_str(0).unwrap(), r.read_str(2).unwrap())
        })
        .collect()
}

async fn reindex_while_writing<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let keyring = LocalKeyProvider::generate_keyring();
    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Contact, _>(&db.pool).await.unwrap();
    schema::register::<Contact, _>(&db.pool).await.unwrap();
    let ttl = Duration::from_secs(1);
    let writer = app(&db.pool, &keyring, ttl);
    let seed: Vec<Contact> = (1..=240).map(contact).collect();
    writer.insert_many(&db.pool, &seed).await.unwrap();
    let url = db.url.clone();

    // The application keeps inserting, updating and looking up during the
    // job; any row it cannot find is a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(1000));
    let misses = Arc::new(AtomicI64::new(0));
    let ops = Arc::new(AtomicI64::new(0));
    let mut writers = Vec::new();
    for w in 0..2i64 {
        let (pool, enc) = (db.pool.clone(), app(&db.pool, &keyring, ttl));
        let (stop, next, misses, ops) = (stop.clone(), next.clone(), misses.clone(), ops.clone());
        writers.push(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = next.fetch_add(1, Ordering::Relaxed);
                let c = contact(id);
                enc.insert(&pool, &c).await.unwrap();
                let mut old = contact(1 + (i * 7 + w) % 240);
                old.city = format!("Moved {i}");
                enc.update_fields(&pool, &old, &["city"]).await.unwrap();
                for probe in [contact(1 + (i * 13 + w) % 240), c] {
                    if !find_one(&enc, &pool, &probe).await {
                        misses.fetch_add(1, Ordering::Relaxed);
                        eprintln!("miss: row {}", probe.id);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    let job = async {
        // A rotation cannot be scoped to one table.
        let refused = common::rowseal(&url, &keyring, &["reindex", "--table", "contacts"]).await;
        let r = common::rowseal(
            &url,
            &keyring,
            &["reindex", "--cache-ttl", "2", "--batch-size", "40"],
        )
        .await;
        // Let the application run across its caches seeing the promotion.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        (refused, r)
    };
    let (_, (refused, r)) = tokio::join!(futures_util::future::join_all(writers), job);
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    // Three tenants and the global key.
    assert_eq!(done["promoted"].as_array().unwrap().len(), 4, "{done}");
    assert!(done["rows_indexed"].as_u64().unwrap() >= 240, "{done}");
    assert!(r.event("waiting").is_some(), "{}", r.stdout);
    assert!(ops.load(Ordering::Relaxed) > 0);
    assert_eq!(misses.load(Ordering::Relaxed), 0, "lookups missed rows");
    let states = key_states(&db).await;
    assert_eq!(
        states,
        vec![
            ":1:retired",
            ":2:active",
            "t0:1:retired",
            "t0:2:active",
            "t1:1:retired",
            "t1:2:active",
            "t2:1:retired",
            "t2:2:active"
        ]
    );

    // Every row, old and new, is found by a fresh process, and every row
    // has its version-2 value (even versions live in the alternate slot).
    let fresh = app(&db.pool, &keyring, Duration::from_secs(300));
    let last = next.load(Ordering::Relaxed);
    for id in (1..=240).chain(1000..last) {
        assert!(find_one(&fresh, &db.pool, &contact(id)).await, "row {id}");
    }
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM contacts WHERE email_idx_alt_kv IS NULL OR email_idx_alt_kv <> 2"
        )
        .await,
        0
    );
    // The retired version's values were cleared once the applications had
    // seen the promotion (the next rotation reuses that slot).
    assert!(
        done["retired_values_cleared"].as_u64().unwrap() > 0,
        "{done}"
    );
    assert_eq!(
        common::scalar(&db, "SELECT COUNT(*) FROM contacts WHERE email_idx_kv IS NOT NULL OR phone_idx_kv IS NOT NULL").await,
        0
    );
    let v = common::rowseal(&url, &keyring, &["verify"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);

    // A second rotation, killed while it waits: the resumed run neither
    // waits the whole lifetime again nor creates another version.
    let mut child = common::command(&url, &keyring, &["reindex", "--cache-ttl", "4"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let pending = common::scalar(
            &db,
            "SELECT COUNT(*) FROM rowseal_keys WHERE purpose = 'index' AND state = 'pending'",
        )
        .await;
        if pending == 4 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no pending keys");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resumed_at = Instant::now();
    let r = common::rowseal(&url, &keyring, &["reindex", "--cache-ttl", "4"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    // The wait before the backfill was not repeated in full.
    for w in r.all("waiting") {
        if w["reason"].as_str().unwrap().contains("pending") {
            assert!(w["seconds"].as_u64().unwrap() < 4, "{w}");
        }
    }
    assert!(resumed_at.elapsed() < Duration::from_secs(30));
    let states = key_states(&db).await;
    assert_eq!(states.len(), 12, "{states:?}");
    assert_eq!(
        states.iter().filter(|s| s.ends_with(":3:active")).count(),
        4,
        "{states:?}"
    );
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM contacts WHERE email_idx_kv IS NULL OR email_idx_kv <> 3"
        )
        .await,
        0
    );
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM contacts WHERE email_idx_alt_kv IS NOT NULL"
        )
        .await,
        0
    );
    for id in [1, 2, 3, 239, 240, 1000] {
        let fresh = app(&db.pool, &keyring, Duration::from_secs(300));
        assert!(find_one(&fresh, &db.pool, &contact(id)).await, "row {id}");
    }
    let v = common::rowseal(&url, &keyring, &["verify"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_sqlite() {
    if let Some(db) = common::sqlite().await {
        reindex_while_writing(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_postgres() {
    if let Some(db) = common::postgres().await {
        reindex_while_writing(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_mariadb() {
    if let Some(db) = common::mysql().await {
        reindex_while_writing(db).await;
    }
}
