//! The caller's tenant is checked on every path (finding 2 of the v1
//! review): a tenant that differs only in case never reads, updates or
//! deletes another tenant's row, even where the tenant column compares
//! case-insensitively (MariaDB/MySQL's default collation, so that the SQL
//! itself matches `ACME` to `acme` and only rowseal's statements and checks
//! stand in the way); and a query that forgets its tenant filter fails
//! closed instead of leaking.

use rowseal_sqlx::{Backend, DbRow, Encryptor, Error, TenantScope};

use super::models::{Audited, Patient, User};
use super::Ctx;

/// On MariaDB/MySQL: makes the tenant columns case-insensitive again, as the
/// default collation made them under v1, so that the SQL itself matches
/// `ACME` to `acme` and only the library's checks stand in the way.
async fn case_insensitive_tenants<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if DB::DIALECT != "mysql" {
        return;
    }
    for table in ["patients", "users"] {
        let sql = format!(
            "ALTER TABLE {table} MODIFY tenant_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL"
        );
        DB::execute(&cx.pool, &sql, vec![]).await.unwrap();
    }
    let n = DB::fetch_all(
        &cx.pool,
        "SELECT id FROM patients WHERE tenant_id = 'ACME'",
        vec![],
    )
    .await
    .unwrap()
    .len();
    assert_eq!(n, 1, "the collation now matches ACME to acme");
}

/// On MariaDB/MySQL, rowseal's own key table compares tenants as bytes
/// (`utf8mb4_bin`), so `ACME` and `acme` have separate keys; the model
/// tables keep the default collation (a `_bin` one would stop sqlx from
/// decoding the column as a `String`), and byte equality is enforced by the
/// statements and checks exercised below.
async fn assert_binary_key_table<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if DB::DIALECT != "mysql" {
        return;
    }
    let sql = "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rowseal_keys' AND COLUMN_NAME = 'tenant'";
    let rows = DB::fetch_all(&cx.pool, sql, vec![]).await.unwrap();
    assert_eq!(rows[0].read_str(0).unwrap(), "utf8mb4_bin");
}

async fn tenant_differing_in_case<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let p = Patient::new("acme", "Ada Lovelace");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    let u = User::new(7, "acme", "ada@example.com");
    cx.enc.insert(&cx.pool, &u).await.unwrap();

    // fetch by primary key: no row of ACME (not acme's row, not an error).
    let got = cx.enc.fetch::<Patient, _>(&cx.pool, "ACME", &p.id).await;
    assert!(matches!(got, Ok(None)), "fetch as ACME: {got:?}");

    // update as ACME: no such row; acme's row is untouched.
    let mut forged = p.clone();
    forged.tenant_id = "ACME".into();
    forged.name = "Mallory".into();
    let r = cx.enc.update(&cx.pool, &forged).await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "update: {r:?}");
    let r = cx.enc.update_fields(&cx.pool, &forged, &["name"]).await;
    assert!(
        matches!(r, Err(Error::NotFound { .. })),
        "update_fields: {r:?}"
    );
    // delete as ACME: nothing deleted.
    assert!(!cx
        .enc
        .delete::<Patient, _>(&cx.pool, "ACME", &p.id)
        .await
        .unwrap());
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "acme", &p.id)
            .await
            .unwrap(),
        Some(p.clone())
    );

    // Blind-index lookups as ACME: nothing of acme's comes back.
    match User::find_by_email(&cx.enc, &cx.pool, "ACME", "ada@example.com").await {
        Ok(found) => assert!(found.is_empty(), "lookup as ACME found {found:?}"),
        Err(e) => assert!(matches!(e, Error::TenantMismatch { .. }), "lookup: {e}"),
    }

    // The user's own query, without a tenant filter, decrypted for ACME:
    // refused by name, on every read path.
    let sql = format!(
        "SELECT {} FROM patients",
        Encryptor::select_list::<Patient, DB>()
    );
    let all = cx
        .enc
        .fetch_all::<Patient, DB, _>("ACME", sqlx::query(&sql), &cx.pool)
        .await;
    assert!(
        matches!(all, Err(Error::TenantMismatch { .. })),
        "fetch_all: {all:?}"
    );
    let one = cx
        .enc
        .fetch_optional::<Patient, DB, _>("ACME", sqlx::query(&sql), &cx.pool)
        .await;
    assert!(
        matches!(one, Err(Error::TenantMismatch { .. })),
        "fetch_optional: {one:?}"
    );
    let rows = DB::fetch_all(&cx.pool, &sql, vec![]).await.unwrap();
    let each = cx
        .enc
        .decrypt_each::<Patient, _>("ACME", &rows)
        .await
        .unwrap();
    assert!(matches!(each[0], Err(Error::TenantMismatch { .. })));
    let message = each[0].as_ref().unwrap_err().to_string();
    assert!(
        !message.contains("Ada") && !message.contains("acme"),
        "the error names neither the value nor the row's tenant: {message}"
    );
    // The same rows for their own tenant, and for any tenant when asked
    // for explicitly.
    assert_eq!(
        cx.enc
            .decrypt_all::<Patient, _>("acme", &rows)
            .await
            .unwrap(),
        vec![p.clone()]
    );
    assert_eq!(
        cx.enc
            .decrypt_all::<Patient, _>(TenantScope::Any, &rows)
            .await
            .unwrap(),
        vec![p.clone()]
    );
}

/// Rows of another tenant are refused by every path, on the tables
/// rowseal creates.
pub async fn tenant_checked_on_every_path<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    assert_binary_key_table(cx).await;
    tenant_differing_in_case(cx).await;
}

/// The same on a table whose tenant column the application declared with an
/// explicit case-insensitive collation (MariaDB/MySQL; elsewhere the same
/// as above).
pub async fn tenant_checked_under_case_insensitive_collation<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let p = Patient::new("acme", "Grace Hopper");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    case_insensitive_tenants(cx).await;
    cx.enc
        .delete::<Patient, _>(&cx.pool, "acme", &p.id)
        .await
        .unwrap();
    tenant_differing_in_case(cx).await;
}

/// A tenant id is at most `MAX_TENANT_ID_BYTES` (255) bytes on every
/// database and in both key modes: one of that length (multi-byte
/// characters included) round-trips; one byte more is `InvalidInput` before
/// any key is made or any statement runs, and neither the error nor its
/// Display quotes the id. (Before the check, PostgreSQL and MariaDB failed
/// in the key store with the cause hidden down the `source()` chain, and
/// SQLite took any length.)
pub async fn tenant_id_length_is_checked<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use rowseal_core::MAX_TENANT_ID_BYTES;
    let longest = format!("{}{}", "é".repeat(126), "abc"); // 126 * 2 + 3 bytes
    assert_eq!(longest.len(), MAX_TENANT_ID_BYTES);
    let patient = Patient::new(&longest, "Longest");
    cx.enc.insert(&cx.pool, &patient).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, &longest, &patient.id)
            .await
            .unwrap(),
        Some(patient)
    );
    let audited = Audited {
        key: "k-longest".into(),
        org: longest.clone(),
        secret: "s".into(),
        amount: Some(1),
    };
    cx.enc.insert(&cx.pool, &audited).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Audited, _>(&cx.pool, &longest, &audited.key)
            .await
            .unwrap(),
        Some(audited)
    );

    let keys_before = count_rows(cx, "rowseal_keys").await;
    for too_long in [format!("{longest}x"), "t".repeat(10_000)] {
        let patient = Patient::new(&too_long, "Too long");
        let audited = Audited {
            key: "k-too-long".into(),
            org: too_long.clone(),
            secret: "s".into(),
            amount: None,
        };
        let errors = [
            cx.enc.insert(&cx.pool, &patient).await.unwrap_err(),
            cx.enc.insert(&cx.pool, &audited).await.unwrap_err(),
            cx.enc
                .insert_many(&cx.pool, std::slice::from_ref(&patient))
                .await
                .unwrap_err(),
        ];
        for e in errors {
            assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("255 bytes"), "{text}");
            assert!(!text.contains(&too_long), "the id is not quoted");
        }
    }
    assert_eq!(count_rows(cx, "rowseal_keys").await, keys_before);
    assert_eq!(
        count_rows(cx, "audited").await,
        1,
        "nothing written for a refused tenant"
    );
}

async fn count_rows<DB: Backend>(cx: &Ctx<DB>, table: &str) -> i64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let rows = DB::fetch_all(&cx.pool, &format!("SELECT COUNT(*) FROM {table}"), vec![])
        .await
        .unwrap();
    match rows[0].read_value(0, rowseal_sqlx::SqlType::I64).unwrap() {
        rowseal_sqlx::Value::I64(n) => n,
        other => panic!("count: {other:?}"),
    }
}
