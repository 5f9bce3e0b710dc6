//! Keys read on the caller's connection: inside a transaction on a pool of
//! one connection (so no second connection exists), operations whose keys
//! have left the cache read them in the transaction instead of waiting for
//! a connection the pool cannot give.

use std::time::Duration;

use rowseal_core::{ErrorKind, KeyPurpose, KeyScope};
use rowseal_sqlx::{Backend, SqlxKeyStore};

use super::models::{Patient, User};
use super::{encryptor, Ctx};

/// Whether `e`, or an error down its `source()` chain, is sqlx's
/// `PoolTimedOut`.
fn pool_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if matches!(
            e.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolTimedOut)
        ) {
            return true;
        }
        at = e.source();
    }
    false
}

pub async fn keys_read_in_the_callers_transaction<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(1500))
        .connect(&cx.db.url)
        .await
        .unwrap();
    let enc = encryptor(&pool, &cx.keyring);

    // Tenant "one" has its tenant and index keys (made outside any
    // transaction); then they leave the cache.
    let ada = User::new(1, "one", "ada@example.com");
    enc.insert(&pool, &ada).await.unwrap();
    let patient = Patient::new("one", "Ada");
    enc.insert(&pool, &patient).await.unwrap();
    enc.keys().forget_cached_keys();

    let mut tx = pool.begin().await.unwrap(); // the pool's only connection

    // The control: the key store's own pool has no connection to give, so a
    // read through it (what every operation did before) times out.
    let e = enc.keys().current_tenant_key("one").await.unwrap_err();
    assert!(pool_timed_out(&e), "expected PoolTimedOut, got {e}");

    // Every operation that takes the connection reads its keys there, each
    // from a cold cache.
    let got = enc
        .fetch::<Patient, _>(&mut tx, "one", &patient.id)
        .await
        .unwrap();
    assert_eq!(got.as_ref(), Some(&patient));
    // Cached only where the transaction reads current data: PostgreSQL's
    // default READ COMMITTED. MariaDB's default REPEATABLE READ and SQLite's
    // transactions read a snapshot, which is used and never cached.
    assert_eq!(
        enc.keys().cached_keys().holds_tenant("one"),
        DB::DIALECT == "postgres",
        "{}: keys read in the transaction cached?",
        DB::DIALECT
    );

    enc.keys().forget_cached_keys();
    let bob = User::new(2, "one", "bob@example.com");
    enc.insert(&mut tx, &bob).await.unwrap();

    enc.keys().forget_cached_keys();
    let more = [
        User::new(3, "one", "cy@example.com"),
        User::new(4, "one", "di@example.com"),
    ];
    assert_eq!(enc.insert_many(&mut tx, &more).await.unwrap(), 2);

    enc.keys().forget_cached_keys();
    let mut changed = patient.clone();
    changed.notes = Some("seen in the transaction".into());
    enc.update_fields(&mut tx, &changed, &["notes"])
        .await
        .unwrap();

    enc.keys().forget_cached_keys();
    changed.name = "Ada L.".into();
    enc.update(&mut tx, &changed).await.unwrap();

    enc.keys().forget_cached_keys();
    let found = User::find_by_email(&enc, &mut tx, "one", " ADA@example.com")
        .await
        .unwrap();
    assert_eq!(found, vec![ada.clone()]);

    enc.keys().forget_cached_keys();
    assert_eq!(
        User::count_by_email(&enc, &mut tx, "one", "bob@example.com")
            .await
            .unwrap(),
        1
    );

    enc.keys().forget_cached_keys();
    let rows = enc
        .fetch_many::<Patient, _>(&mut tx, "one", &[patient.id])
        .await
        .unwrap();
    assert_eq!(rows, vec![changed.clone()]);

    // What stays out of the transaction, as documented: a new tenant's key
    // is created through the key store's own pool. Here that pool has no
    // connection to give: a typed error after the acquire timeout, never a
    // hang, and the transaction goes on.
    let e = enc
        .insert(&mut tx, &User::new(5, "brand-new", "eve@example.com"))
        .await
        .unwrap_err();
    assert!(pool_timed_out(&e), "expected PoolTimedOut, got {e}");

    enc.insert(&mut tx, &User::new(6, "one", "fay@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Committed, and read back by another process's encryptor.
    let other = encryptor(&cx.pool, &cx.keyring);
    let read = other
        .fetch::<Patient, _>(&cx.pool, "one", &patient.id)
        .await
        .unwrap();
    assert_eq!(read, Some(changed));
    for id in [2, 3, 4, 6] {
        assert!(other
            .fetch::<User, _>(&cx.pool, "one", &id)
            .await
            .unwrap()
            .is_some());
    }
    pool.close().await;
}

/// A transaction reading a snapshot (REPEATABLE READ: MariaDB's default,
/// chosen explicitly on PostgreSQL) that began before a tenant was
/// crypto-shredded still sees the tenant's key, as it sees the rows of its
/// snapshot: its reads succeed while it lasts. But nothing it read is
/// cached: once it ends, the tenant's rows are `KeyDestroyed` again. Had the
/// key been cached from the snapshot, the shredded tenant would stay
/// readable for a cache lifetime after the transaction. (SQLite: skipped;
/// its snapshot depends on the journal mode.)
pub async fn a_snapshot_never_caches_a_shredded_key<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if DB::DIALECT == "sqlite" {
        return;
    }
    let enc = encryptor(&cx.pool, &cx.keyring);
    let patient = Patient::new("gone", "Ada");
    enc.insert(&cx.pool, &patient).await.unwrap();
    enc.keys().forget_cached_keys();

    let mut conn = cx.pool.acquire().await.unwrap();
    let begin = if DB::DIALECT == "postgres" {
        "BEGIN ISOLATION LEVEL REPEATABLE READ"
    } else {
        "BEGIN"
    };
    let mut tx = sqlx::Connection::begin_with(&mut *conn, begin)
        .await
        .unwrap();
    // The snapshot is taken at the transaction's first read.
    DB::__fetch_all_on(&mut *tx, "SELECT version FROM rowseal_keys", Vec::new())
        .await
        .unwrap();

    // Shredded meanwhile, by someone else.
    let store = SqlxKeyStore::new(cx.pool.clone());
    let scope = KeyScope::Tenant("gone".into());
    assert!(store.destroy(KeyPurpose::Tenant, &scope, 1).await.unwrap());

    let inside = enc
        .fetch::<Patient, _>(&mut tx, "gone", &patient.id)
        .await
        .unwrap();
    assert_eq!(inside, Some(patient.clone()), "the snapshot's view");
    assert!(
        !enc.keys().cached_keys().holds_tenant("gone"),
        "a key read from a snapshot was cached"
    );
    tx.commit().await.unwrap();
    drop(conn);

    let e = enc
        .fetch::<Patient, _>(&cx.pool, "gone", &patient.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyDestroyed, "{e}");
}
