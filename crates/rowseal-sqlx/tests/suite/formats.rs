//! A row header of another storage format version is reported as such on
//! every read and write path (finding 8 of the v1 review: it used to read as
//! tampering, "decryption failed"), never as a decryption failure.

use rowseal_sqlx::{Backend, Encryptor, Error, TenantScope, Value};

use super::models::Patient;
use super::{raw_get, raw_set, Ctx};

/// The format version an error reports, if it is `UnsupportedFormat`.
fn unsupported_version(e: &Error) -> Option<u8> {
    match e {
        Error::Field { source, .. } => unsupported_version(source),
        Error::UnsupportedFormat { version, .. } => Some(*version),
        _ => None,
    }
}

pub async fn other_format_versions_are_typed<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let p = Patient::new("acme", "Ada Lovelace");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    let header = raw_get(
        &cx.pool,
        "patients",
        "rowseal_header",
        "id",
        Value::Uuid(p.id),
    )
    .await;
    let sql = format!(
        "SELECT {} FROM patients",
        Encryptor::select_list::<Patient, DB>()
    );
    // 0x03: the next format, which this build does not read; 0xee: unknown
    // to every reader.
    for version in [3u8, 0xee] {
        let mut other = header.clone();
        other[0] = version;
        raw_set(
            &cx.pool,
            "patients",
            "rowseal_header",
            "id",
            Value::Uuid(p.id),
            other,
        )
        .await;

        let e = cx
            .enc
            .fetch::<Patient, _>(&cx.pool, "acme", &p.id)
            .await
            .unwrap_err();
        assert_eq!(unsupported_version(&e), Some(version), "fetch: {e}");
        let e = cx
            .enc
            .fetch_all::<Patient, DB, _>("acme", sqlx::query(&sql), &cx.pool)
            .await
            .unwrap_err();
        assert_eq!(unsupported_version(&e), Some(version), "fetch_all: {e}");
        let rows = DB::fetch_all(&cx.pool, &sql, vec![]).await.unwrap();
        let each = cx
            .enc
            .decrypt_each::<Patient, _>(TenantScope::One("acme"), &rows)
            .await
            .unwrap();
        let e = each[0].as_ref().unwrap_err();
        assert_eq!(unsupported_version(e), Some(version), "decrypt_each: {e}");
        let e = cx
            .enc
            .update_fields(&cx.pool, &p, &["name"])
            .await
            .unwrap_err();
        assert_eq!(unsupported_version(&e), Some(version), "update_fields: {e}");
        assert!(
            !e.to_string().contains("decryption failed"),
            "not reported as tampering: {e}"
        );
    }
}

/// Finding 4 of the v1 review, the part format 1 can answer: a row whose key
/// header and ciphertexts were NULLed read without a key, as a row of NULL
/// fields. Now only a model adopted from plaintext columns accepts rows
/// without a header (tests/legacy_plaintext.rs); for any other the row is
/// refused, on read and on update_fields (which used to give it a fresh
/// header). rowseal's DDL makes the header NOT NULL, so this needs a table
/// declared without that constraint (PostgreSQL and MariaDB here; SQLite
/// cannot drop a constraint in place).
pub async fn null_header_refused_without_legacy_columns<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let relax: &[&str] = match DB::DIALECT {
        "postgres" => &[
            "ALTER TABLE patients ALTER COLUMN rowseal_header DROP NOT NULL",
            "ALTER TABLE patients ALTER COLUMN name DROP NOT NULL",
        ],
        "mysql" => &[
            "ALTER TABLE patients MODIFY rowseal_header VARBINARY(1024) NULL",
            "ALTER TABLE patients MODIFY name LONGBLOB NULL",
        ],
        _ => return,
    };
    for sql in relax {
        DB::execute(&cx.pool, sql, vec![]).await.unwrap();
    }
    let p = Patient::new("acme", "Ada Lovelace");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    let mut sql = String::from("UPDATE patients SET rowseal_header = NULL, name = NULL, dob = NULL, notes = NULL WHERE id = ");
    DB::push_placeholder(&mut sql, 1);
    DB::execute(&cx.pool, &sql, vec![Value::Uuid(p.id)])
        .await
        .unwrap();
    let e = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "acme", &p.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Field { column, .. } if column == "rowseal_header"),
        "fetch: {e}"
    );
    let e = cx
        .enc
        .update_fields(&cx.pool, &p, &["name"])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Field { .. }), "update_fields: {e}");
    // Still refused afterwards: update_fields did not give it a header.
    assert!(cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "acme", &p.id)
        .await
        .is_err());
}
