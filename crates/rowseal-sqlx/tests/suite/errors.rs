//! Error kinds (`Error::kind`), each produced by a real fault on the
//! database: what a service branches on. A key-provider outage is shown
//! against the KMS test server in rowseal-kms's fault-proxy tests; its
//! classification is unit-tested with the error type.

use rowseal_sqlx::{Backend, DbRow, Error, ErrorKind, Value};

use super::models::{Patient, User};
use super::{encryptor, Ctx};

pub async fn error_kinds_from_real_faults<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    // NotFound: an update of a row that does not exist.
    let ghost = Patient::new("t1", "Nobody");
    let e = cx.enc.update(&cx.pool, &ghost).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = cx
        .enc
        .update_fields(&cx.pool, &ghost, &["name"])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // UniqueViolation: a unique blind index, and a primary key, taken.
    let user = User::new(1, "t1", "ada@example.com");
    cx.enc.insert(&cx.pool, &user).await.unwrap();
    let e = cx
        .enc
        .insert(&cx.pool, &User::new(2, "t1", "ADA@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UniqueViolation { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::UniqueViolation);
    let e = cx
        .enc
        .insert(&cx.pool, &User::new(1, "t1", "other@example.com"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{e}");
    assert!(!e.is_retryable());

    // InvalidInput: a tenant id over 255 bytes.
    let e = cx
        .enc
        .insert(&cx.pool, &Patient::new(&"t".repeat(300), "Long"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    // Tampered: a ciphertext moved from another row.
    let a = Patient::new("t1", "Ada");
    let b = Patient::new("t1", "Bob");
    cx.enc.insert(&cx.pool, &a).await.unwrap();
    cx.enc.insert(&cx.pool, &b).await.unwrap();
    copy_name(cx, &a.id, &b.id).await;
    let e = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t1", &b.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tampered, "{e}");
    assert!(e.is_tampered() && e.is_decrypt() && !e.is_retryable());

    // KeyDestroyed: the tenant's key destroyed in the key store (what
    // `rowseal shred` does), read by a process with a cold cache.
    let c = Patient::new("t-shred", "Cy");
    cx.enc.insert(&cx.pool, &c).await.unwrap();
    DB::execute(
        &cx.pool,
        "UPDATE rowseal_keys SET wrapped = NULL, state = 'destroyed' WHERE tenant = 't-shred'",
        vec![],
    )
    .await
    .unwrap();
    let cold = encryptor(&cx.pool, &cx.keyring);
    let e = cold
        .fetch::<Patient, _>(&cx.pool, "t-shred", &c.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyDestroyed, "{e}");
    assert!(e.is_decrypt() && !e.is_tampered());

    conflict(cx).await;
}

/// Conflict: `update_fields` reads the row, then another writer re-seals it
/// (as a rotation does) before `update_fields` writes; its compare-and-swap
/// on the header fails, nothing of it is written, and the error says to
/// retry. The other writer holds the row locked while `update_fields` reads
/// (a plain read, not blocked) and then waits to write, so the order is
/// certain. SQLite has one writer at a time and no row locks: the other
/// databases show it.
async fn conflict<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if DB::DIALECT == "sqlite" {
        return;
    }
    let row = Patient::new("t1", "Dee");
    cx.enc.insert(&cx.pool, &row).await.unwrap();
    let mut tx = cx.pool.begin().await.unwrap();
    let mut lock = String::from("SELECT id FROM patients WHERE id = ");
    DB::push_placeholder(&mut lock, 1);
    lock.push_str(" FOR UPDATE");
    DB::execute_on(&mut *tx, &lock, vec![Value::Uuid(row.id)])
        .await
        .unwrap();

    let mut mine = row.clone();
    mine.name = "Dee, edited".into();
    let (enc, pool) = (cx.enc.clone(), cx.pool.clone());
    let writer = tokio::spawn(async move { enc.update_fields(&pool, &mine, &["name"]).await });
    wait_for_blocked_update::<DB>(cx).await;

    let mut theirs = row.clone();
    theirs.notes = Some("re-sealed meanwhile".into());
    cx.enc.update(&mut tx, &theirs).await.unwrap();
    tx.commit().await.unwrap();

    let e = writer.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.is_retryable());
    let stored = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t1", &row.id)
        .await
        .unwrap();
    assert_eq!(stored, Some(theirs), "nothing of the losing write");
}

/// Waits until a statement `UPDATE patients ...` of another session on this
/// test's database is running (blocked on the row lock: it would otherwise
/// finish at once).
async fn wait_for_blocked_update<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let sql = if DB::DIALECT == "postgres" {
        "SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'UPDATE \"patients\"%' AND pid <> pg_backend_pid() AND datname = current_database()"
    } else {
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND DB = DATABASE() AND INFO LIKE 'UPDATE `patients`%'"
    };
    for _ in 0..600 {
        let rows = DB::fetch_all(&cx.pool, sql, vec![]).await.unwrap();
        let n = match rows[0].read_value(0, rowseal_sqlx::SqlType::I64).unwrap() {
            Value::I64(n) => n,
            other => panic!("count: {other:?}"),
        };
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("update_fields never reached its write");
}

/// Copies `from`'s `name` ciphertext onto `to` (same tenant and table).
async fn copy_name<DB: Backend>(cx: &Ctx<DB>, from: &uuid::Uuid, to: &uuid::Uuid)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut select = String::from("SELECT name FROM patients WHERE id = ");
    DB::push_placeholder(&mut select, 1);
    let rows = DB::fetch_all(&cx.pool, &select, vec![Value::Uuid(*from)])
        .await
        .unwrap();
    let name = rows[0].read_opt_bytes(0).unwrap().unwrap().to_vec();
    let mut update = String::from("UPDATE patients SET name = ");
    DB::push_placeholder(&mut update, 1);
    update.push_str(" WHERE id = ");
    DB::push_placeholder(&mut update, 2);
    let n = DB::execute(
        &cx.pool,
        &update,
        vec![Value::Bytes(name), Value::Uuid(*to)],
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
}
