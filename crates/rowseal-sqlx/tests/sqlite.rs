#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on SQLite (a temporary database file per test, in WAL mode).

mod suite;

use rowseal_test_support::db;
use sqlx::sqlite::SqliteJournalMode;
use suite::Ctx;

async fn setup() -> Option<Ctx<sqlx::Sqlite>> {
    let db = db::sqlite_with(4, |o| o.journal_mode(SqliteJournalMode::Wal)).await;
    Some(Ctx::new(db).await)
}

all_cases!();

/// SQLite has one writer. A tenant's first key is created through the key
/// store's own pool (a key written in the caller's transaction would vanish
/// on rollback while the process kept it), so inside a write transaction
/// that already holds the lock it cannot be written: a typed error that says
/// what to do, after the pool's busy timeout, and the transaction goes on.
/// Created first, as the error says, the same insert succeeds in a
/// transaction.
#[tokio::test]
async fn a_new_tenants_key_inside_a_write_transaction() {
    use rowseal_core::KeyScope;
    use suite::models::User;

    let db = db::sqlite_with(2, |o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_millis(300))
    })
    .await;
    let cx = Ctx::new(db).await;
    let enc = suite::encryptor(&cx.pool, &cx.keyring);
    enc.insert(&cx.pool, &User::new(1, "one", "ada@example.com"))
        .await
        .unwrap();

    let mut tx = cx.pool.begin().await.unwrap();
    // Takes the write lock.
    enc.insert(&mut *tx, &User::new(2, "one", "bob@example.com"))
        .await
        .unwrap();
    let e = enc
        .insert(&mut *tx, &User::new(3, "brand-new", "cy@example.com"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("create a tenant's keys before its first write transaction"),
        "{text}"
    );
    assert!(!text.contains("cy@example.com"), "{text}");
    enc.insert(&mut *tx, &User::new(4, "one", "di@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The tenant's keys first (its tenant key, and the index key of the
    // model's tenant-scoped blind index), then the transaction.
    enc.keys().current_tenant_key("brand-new").await.unwrap();
    enc.keys()
        .current_index_key(&KeyScope::Tenant("brand-new".into()))
        .await
        .unwrap();
    let mut tx = cx.pool.begin().await.unwrap();
    enc.insert(&mut *tx, &User::new(2_000, "one", "eve@example.com"))
        .await
        .unwrap();
    enc.insert(&mut *tx, &User::new(3, "brand-new", "cy@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for (tenant, id) in [("one", 2), ("one", 4), ("brand-new", 3)] {
        assert!(enc
            .fetch::<User, _>(&cx.pool, tenant, &id)
            .await
            .unwrap()
            .is_some());
    }
    cx.finish().await;
}
