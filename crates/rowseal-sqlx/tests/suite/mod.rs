//! The round-trip, plaintext and tampering suite, run identically on each
//! database by `tests/{sqlite,postgres,mysql}.rs`.

#![allow(dead_code)]

mod composite;
mod errors;
mod format_v2;
mod formats;
mod generated;
mod keys_in_transaction;
mod lookups;
pub mod models;
mod partial;
mod passthrough;
mod registry;
mod sealed;
mod tenancy;

#[allow(unused_imports)]
pub use composite::composite_primary_keys;
#[allow(unused_imports)]
pub use errors::error_kinds_from_real_faults;
#[allow(unused_imports)]
pub use format_v2::{
    format_1_rows_read_and_upgrade, presence_and_mixing_refused, renames_keep_rows_readable,
    stored_bytes_per_row,
};
#[allow(unused_imports)]
pub use formats::{null_header_refused_without_legacy_columns, other_format_versions_are_typed};
#[allow(unused_imports)]
pub use generated::generated_columns;
#[allow(unused_imports)]
pub use keys_in_transaction::{
    a_snapshot_never_caches_a_shredded_key, keys_read_in_the_callers_transaction,
};
#[allow(unused_imports)]
pub use lookups::{
    bounded_lookup_counts_true_matches, bounded_lookup_order_and_filter,
    count_and_exists_are_exact, fetch_many_in_chunks, index_condition_in_own_query,
};
#[allow(unused_imports)]
pub use partial::partial_views;
#[allow(unused_imports)]
pub use passthrough::sql_type_fields;
#[allow(unused_imports)] // the cases! macro names them; not every test binary runs it
pub use registry::{registry_round_trip, registry_unknown_format};
#[allow(unused_imports)]
pub use sealed::{join_of_two_models, sealed_rows_open_for_their_tenant, typed_tenants};
#[allow(unused_imports)]
pub use tenancy::{
    tenant_checked_on_every_path, tenant_checked_under_case_insensitive_collation,
    tenant_id_length_is_checked,
};

use rowseal_sqlx::TenantScope;
use std::sync::Arc;

use futures_util::TryStreamExt;
use models::{Audited, Everything, Patient, User};
use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Backend, DbRow, Encrypted, Encryptor, Error, SqlxKeyStore, Value};
use rowseal_test_support::db::TestDb;

/// A database made for one test (dropped by `finish`), with the suite's
/// tables and an encryptor on a fresh keyring.
pub struct Ctx<DB: sqlx::Database> {
    pub pool: sqlx::Pool<DB>,
    pub enc: Encryptor,
    pub keyring: String,
    db: TestDb<DB>,
}

impl<DB: Backend> Ctx<DB> {
    pub async fn new(db: TestDb<DB>) -> Self {
        let pool = db.pool.clone();
        schema::install(&pool)
            .await
            .expect("install rowseal tables");
        schema::create_table::<Patient, _>(&pool)
            .await
            .expect("patients");
        schema::create_table::<Everything, _>(&pool)
            .await
            .expect("everything");
        schema::create_table::<Audited, _>(&pool)
            .await
            .expect("audited");
        schema::create_table::<User, _>(&pool).await.expect("users");
        let keyring = LocalKeyProvider::generate_keyring().to_string();
        let enc = encryptor(&pool, &keyring);
        Ctx {
            pool,
            enc,
            keyring,
            db,
        }
    }

    pub async fn finish(self) {
        self.db.finish().await;
    }
}

pub fn encryptor<DB: Backend>(pool: &sqlx::Pool<DB>, keyring: &str) -> Encryptor {
    let provider = LocalKeyProvider::from_keyring_str(keyring).unwrap();
    let keys = KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    Encryptor::new(Arc::new(keys))
}

/// Every column of every row, as bytes or text where the column is one.
async fn raw_cells<DB: Backend>(pool: &sqlx::Pool<DB>, table: &str) -> Vec<Vec<u8>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::Row;
    let mut sql = String::from("SELECT * FROM ");
    DB::push_ident(&mut sql, table);
    let rows = DB::fetch_all(pool, &sql, vec![]).await.unwrap();
    let mut out = Vec::new();
    for row in &rows {
        for i in 0..row.columns().len() {
            if let Ok(b) = row.read_bytes(i) {
                out.push(b.to_vec());
            } else if let Ok(s) = row.read_str(i) {
                out.push(s.as_bytes().to_vec());
            }
        }
    }
    out
}

async fn raw_get<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    table: &str,
    column: &str,
    pk_col: &str,
    pk: Value,
) -> Vec<u8>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from("SELECT ");
    DB::push_ident(&mut sql, column);
    sql.push_str(" FROM ");
    DB::push_ident(&mut sql, table);
    sql.push_str(" WHERE ");
    DB::push_ident(&mut sql, pk_col);
    sql.push_str(" = ");
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_optional(pool, &sql, vec![pk])
        .await
        .unwrap()
        .unwrap();
    row.read_bytes(0).unwrap().to_vec()
}

async fn raw_set<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    table: &str,
    column: &str,
    pk_col: &str,
    pk: Value,
    bytes: Vec<u8>,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from("UPDATE ");
    DB::push_ident(&mut sql, table);
    sql.push_str(" SET ");
    DB::push_ident(&mut sql, column);
    sql.push_str(" = ");
    DB::push_placeholder(&mut sql, 1);
    sql.push_str(" WHERE ");
    DB::push_ident(&mut sql, pk_col);
    sql.push_str(" = ");
    DB::push_placeholder(&mut sql, 2);
    let n = DB::execute(pool, &sql, vec![Value::Bytes(bytes), pk])
        .await
        .unwrap();
    assert_eq!(n, 1);
}

async fn count<DB: Backend>(pool: &sqlx::Pool<DB>, table: &str) -> i64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from("SELECT COUNT(*) FROM ");
    DB::push_ident(&mut sql, table);
    let row = DB::fetch_optional(pool, &sql, vec![])
        .await
        .unwrap()
        .unwrap();
    match row.read_value(0, rowseal_sqlx::SqlType::I64).unwrap() {
        Value::I64(n) => n,
        other => panic!("count: {other:?}"),
    }
}

fn select<T: Encrypted, DB: Backend>(filter: &str) -> String {
    let mut sql = format!("SELECT {} FROM ", Encryptor::select_list::<T, DB>());
    DB::push_ident(&mut sql, T::model().table());
    sql.push_str(filter);
    sql
}

// ---- cases -------------------------------------------------------------

pub async fn all_types_round_trip<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let full = Everything::full(1, "acme");
    let minimal = Everything::minimal(2, "acme");
    cx.enc.insert(&cx.pool, &full).await.unwrap();
    cx.enc.insert(&cx.pool, &minimal).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Everything, _>(&cx.pool, "acme", &1)
            .await
            .unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        cx.enc
            .fetch::<Everything, _>(&cx.pool, "acme", &2)
            .await
            .unwrap(),
        Some(minimal.clone())
    );
    // NULL stays NULL: the optional encrypted columns of the minimal row hold no bytes.
    let mut sql = String::from("SELECT COUNT(*) FROM everything WHERE o_s IS NULL AND o_json IS NULL AND j_opt_address IS NULL AND id = ");
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_optional(&cx.pool, &sql, vec![Value::I64(2)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.read_value(0, rowseal_sqlx::SqlType::I64).unwrap(),
        Value::I64(1)
    );
    // An empty string is encrypted, not NULL.
    let mut sql = String::from("SELECT COUNT(*) FROM everything WHERE s IS NOT NULL AND id = ");
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_optional(&cx.pool, &sql, vec![Value::I64(2)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.read_value(0, rowseal_sqlx::SqlType::I64).unwrap(),
        Value::I64(1)
    );
    // Another tenant does not see them.
    assert_eq!(
        cx.enc
            .fetch::<Everything, _>(&cx.pool, "other", &1)
            .await
            .unwrap(),
        None
    );
}

pub async fn large_values<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut e = Everything::full(10, "acme");
    e.s = "é".repeat(512 * 1024); // 1 MiB of UTF-8
    e.bytes = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    e.o_bytes = Some(vec![0xAB; 1024 * 1024]);
    cx.enc.insert(&cx.pool, &e).await.unwrap();
    // Twenty 1 MiB rows in one insert_many: more than one statement may carry
    // (MySQL's max_allowed_packet), split by rowseal.
    let many: Vec<Everything> = (100..120)
        .map(|i| {
            let mut m = Everything::minimal(i, "big");
            m.bytes = vec![(i % 256) as u8; 1024 * 1024];
            m
        })
        .collect();
    assert_eq!(cx.enc.insert_many(&cx.pool, &many).await.unwrap(), 20);
    let sql = select::<Everything, DB>(" WHERE tenant = 'big'");
    let mut got: Vec<Everything> = cx
        .enc
        .fetch_all(TenantScope::Any, sqlx::query::<DB>(&sql), &cx.pool)
        .await
        .unwrap();
    got.sort_by_key(|m| m.id);
    assert_eq!(got, many);
    let back = cx
        .enc
        .fetch::<Everything, _>(&cx.pool, "acme", &10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, e);
}

pub async fn crud<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut p = Patient::new("t1", "Ada Lovelace");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &p.id)
            .await
            .unwrap(),
        Some(p.clone())
    );
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t2", &p.id)
            .await
            .unwrap(),
        None
    );

    // Whole-row update: new values, new row key.
    let header_before = raw_get(
        &cx.pool,
        "patients",
        "rowseal_header",
        "id",
        Value::Uuid(p.id),
    )
    .await;
    p.name = "Ada King".into();
    p.birth_date = None;
    p.visits = 4;
    cx.enc.update(&cx.pool, &p).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &p.id)
            .await
            .unwrap(),
        Some(p.clone())
    );
    assert_ne!(
        header_before,
        raw_get(
            &cx.pool,
            "patients",
            "rowseal_header",
            "id",
            Value::Uuid(p.id)
        )
        .await
    );

    // Field update: only the chosen fields change, and the row is re-sealed
    // whole under a fresh row key (format 2: every write re-keys the row).
    let header = raw_get(
        &cx.pool,
        "patients",
        "rowseal_header",
        "id",
        Value::Uuid(p.id),
    )
    .await;
    let stored = p.clone();
    p.notes = Some("updated notes".into());
    p.visits = 99;
    p.name = "not written".into();
    cx.enc
        .update_fields(&cx.pool, &p, &["notes", "visits"])
        .await
        .unwrap();
    let back = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "t1", &p.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.notes.as_deref(), Some("updated notes"));
    assert_eq!(back.visits, 99);
    assert_eq!(back.name, stored.name);
    assert_ne!(
        header,
        raw_get(
            &cx.pool,
            "patients",
            "rowseal_header",
            "id",
            Value::Uuid(p.id)
        )
        .await
    );
    assert!(matches!(
        cx.enc.update_fields(&cx.pool, &p, &["nope"]).await,
        Err(Error::InvalidInput { .. })
    ));

    // Wrong tenant: no update, no delete.
    let mut other = p.clone();
    other.tenant_id = "t2".into();
    assert!(matches!(
        cx.enc.update(&cx.pool, &other).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!cx
        .enc
        .delete::<Patient, _>(&cx.pool, "t2", &p.id)
        .await
        .unwrap());
    assert!(cx
        .enc
        .delete::<Patient, _>(&cx.pool, "t1", &p.id)
        .await
        .unwrap());
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "t1", &p.id)
            .await
            .unwrap(),
        None
    );
}

pub async fn bulk_and_queries<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let rows: Vec<Patient> = (0..3000)
        .map(|i| {
            Patient::new(
                if i % 3 == 0 { "north" } else { "south" },
                &format!("patient {i} ✓"),
            )
        })
        .collect();
    let n = cx.enc.insert_many(&cx.pool, &rows).await.unwrap();
    assert_eq!(n, 3000);

    let sql = select::<Patient, DB>("");
    let mut all: Vec<Patient> = cx
        .enc
        .fetch_all(TenantScope::Any, sqlx::query::<DB>(&sql), &cx.pool)
        .await
        .unwrap();
    all.sort_by_key(|p| p.id);
    let mut expected = rows.clone();
    expected.sort_by_key(|p| p.id);
    assert_eq!(all, expected);

    let sql = select::<Patient, DB>(" WHERE tenant_id = 'north'");
    let north: Vec<Patient> = cx
        .enc
        .fetch_all(TenantScope::Any, sqlx::query::<DB>(&sql), &cx.pool)
        .await
        .unwrap();
    assert_eq!(north.len(), 1000);

    let one: Option<Patient> = cx
        .enc
        .fetch_optional(
            TenantScope::Any,
            sqlx::query::<DB>(&select::<Patient, DB>(" WHERE visits = 3 LIMIT 1")),
            &cx.pool,
        )
        .await
        .unwrap();
    assert!(one.is_some());

    let enc = cx.enc.clone().with_stream_chunk(700);
    let sql = select::<Patient, DB>("");
    let streamed: Vec<Patient> = enc
        .fetch_stream(TenantScope::Any, sqlx::query::<DB>(&sql), &cx.pool)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed.len(), 3000);

    // Single-threaded decryption gives the same rows.
    let serial = cx.enc.clone().with_threads(1);
    let mut again: Vec<Patient> = serial
        .fetch_all(TenantScope::Any, sqlx::query::<DB>(&sql), &cx.pool)
        .await
        .unwrap();
    again.sort_by_key(|p| p.id);
    assert_eq!(again, expected);
}

pub async fn transactions<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    // The tenant key exists before the transactions (SQLite has one writer).
    cx.enc.keys().current_tenant_key("tx").await.unwrap();
    let before = count(&cx.pool, "patients").await;

    let committed = Patient::new("tx", "committed");
    let mut tx = cx.pool.begin().await.unwrap();
    cx.enc.insert(&mut tx, &committed).await.unwrap();
    cx.enc
        .insert_many(
            &mut tx,
            &[Patient::new("tx", "c2"), Patient::new("tx", "c3")],
        )
        .await
        .unwrap();
    let inside = cx
        .enc
        .fetch::<Patient, _>(&mut tx, "tx", &committed.id)
        .await
        .unwrap();
    assert_eq!(inside, Some(committed.clone()));
    tx.commit().await.unwrap();
    assert_eq!(count(&cx.pool, "patients").await, before + 3);

    let mut tx = cx.pool.begin().await.unwrap();
    let doomed = Patient::new("tx", "rolled back");
    cx.enc.insert(&mut tx, &doomed).await.unwrap();
    cx.enc
        .insert_many(
            &mut tx,
            &[Patient::new("tx", "r2"), Patient::new("tx", "r3")],
        )
        .await
        .unwrap();
    let mut changed = committed.clone();
    changed.name = "changed in rolled back tx".into();
    cx.enc.update(&mut tx, &changed).await.unwrap();
    cx.enc
        .update_fields(&mut tx, &changed, &["notes"])
        .await
        .unwrap();
    assert!(cx
        .enc
        .fetch::<Patient, _>(&mut tx, "tx", &doomed.id)
        .await
        .unwrap()
        .is_some());
    tx.rollback().await.unwrap();

    assert_eq!(count(&cx.pool, "patients").await, before + 3);
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "tx", &doomed.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "tx", &committed.id)
            .await
            .unwrap(),
        Some(committed)
    );
}

pub async fn no_plaintext_in_table<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut p = Patient::new("acme", "Grace Hopper SECRETNAME");
    p.notes = Some("SECRETNOTE diagnosis".into());
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    let mut e = Everything::full(5, "acme");
    e.s = "SECRETSTRING".into();
    e.bytes = b"SECRETBYTES".to_vec();
    e.j_value = serde_json::json!({"k": "SECRETJSON"});
    e.j_address.street = "SECRETSTREET".into();
    cx.enc.insert(&cx.pool, &e).await.unwrap();

    let cells = [
        raw_cells(&cx.pool, "patients").await,
        raw_cells(&cx.pool, "everything").await,
    ]
    .concat();
    assert!(cells.len() > 10);
    for needle in [
        "SECRETNAME",
        "SECRETNOTE",
        "SECRETSTRING",
        "SECRETBYTES",
        "SECRETJSON",
        "SECRETSTREET",
        "Grace",
    ] {
        for cell in &cells {
            assert!(
                !cell.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "plaintext {needle} found in the table"
            );
        }
    }
    // Neither do the stored keys hold a plain key: only wrapped ones.
    let keys = raw_cells(&cx.pool, "rowseal_keys").await;
    assert!(!keys.is_empty());
}

fn assert_decrypt_error(r: Result<Option<Patient>, Error>, column: &str, pk: &uuid::Uuid) {
    match r {
        Err(Error::Field {
            table,
            column: c,
            primary_key,
            ..
        }) => {
            assert_eq!(table, "patients");
            assert_eq!(c, column);
            assert_eq!(primary_key, pk.to_string());
        }
        other => panic!("expected a decrypt error on {column}, got {other:?}"),
    }
}

pub async fn tampering<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let a1 = Patient::new("a", "a-one");
    let a2 = Patient::new("a", "a-two");
    let a3 = Patient::new("a", "a-three");
    let a4 = Patient::new("a", "a-four");
    let good = Patient::new("a", "untouched");
    let b1 = Patient::new("b", "b-one");
    cx.enc
        .insert_many(
            &cx.pool,
            &[
                a1.clone(),
                a2.clone(),
                a3.clone(),
                a4.clone(),
                good.clone(),
                b1.clone(),
            ],
        )
        .await
        .unwrap();
    let id = |p: &Patient| Value::Uuid(p.id);

    // Swap a ciphertext between rows of one tenant (the primary key is bound).
    let c = raw_get(&cx.pool, "patients", "name", "id", id(&a1)).await;
    raw_set(&cx.pool, "patients", "name", "id", id(&a2), c).await;
    assert_decrypt_error(
        cx.enc.fetch::<Patient, _>(&cx.pool, "a", &a2.id).await,
        "name",
        &a2.id,
    );

    // Swap between columns of one row.
    let c = raw_get(&cx.pool, "patients", "notes", "id", id(&a3)).await;
    raw_set(&cx.pool, "patients", "name", "id", id(&a3), c).await;
    assert_decrypt_error(
        cx.enc.fetch::<Patient, _>(&cx.pool, "a", &a3.id).await,
        "name",
        &a3.id,
    );

    // Swap between tenants.
    let c = raw_get(&cx.pool, "patients", "dob", "id", id(&b1)).await;
    raw_set(&cx.pool, "patients", "dob", "id", id(&a1), c).await;
    assert_decrypt_error(
        cx.enc.fetch::<Patient, _>(&cx.pool, "a", &a1.id).await,
        "dob",
        &a1.id,
    );

    // Flip one byte.
    let mut c = raw_get(&cx.pool, "patients", "notes", "id", id(&a4)).await;
    let last = c.len() - 1;
    c[last] ^= 1;
    raw_set(&cx.pool, "patients", "notes", "id", id(&a4), c).await;
    assert_decrypt_error(
        cx.enc.fetch::<Patient, _>(&cx.pool, "a", &a4.id).await,
        "notes",
        &a4.id,
    );

    // Edit the key header.
    let mut h = raw_get(&cx.pool, "patients", "rowseal_header", "id", id(&b1)).await;
    h[10] ^= 0x80;
    raw_set(&cx.pool, "patients", "rowseal_header", "id", id(&b1), h).await;
    assert_decrypt_error(
        cx.enc.fetch::<Patient, _>(&cx.pool, "b", &b1.id).await,
        "rowseal_header",
        &b1.id,
    );

    // Other rows still read, alone and in a batch where each row fails alone.
    assert_eq!(
        cx.enc
            .fetch::<Patient, _>(&cx.pool, "a", &good.id)
            .await
            .unwrap(),
        Some(good.clone())
    );
    let rows = DB::fetch_all(&cx.pool, &select::<Patient, DB>(""), vec![])
        .await
        .unwrap();
    let each = cx
        .enc
        .decrypt_each::<Patient, _>(TenantScope::Any, &rows)
        .await
        .unwrap();
    assert_eq!(each.len(), 6);
    assert_eq!(each.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(each
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.is_decrypt()));
    // Errors never quote values.
    for e in each.iter().filter_map(|r| r.as_ref().err()) {
        let text = format!("{e} {e:?}");
        for name in ["a-one", "a-two", "a-three", "a-four", "b-one", "untouched"] {
            assert!(!text.contains(name), "{text}");
        }
    }
}

pub async fn keys_persist<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let p = Patient::new("persist", "someone");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    // A new process: same root key, same database, empty caches.
    let fresh = encryptor(&cx.pool, &cx.keyring);
    assert_eq!(
        fresh
            .fetch::<Patient, _>(&cx.pool, "persist", &p.id)
            .await
            .unwrap(),
        Some(p.clone())
    );
    // Another root key cannot read it.
    let stranger = encryptor(&cx.pool, LocalKeyProvider::generate_keyring().as_ref());
    assert!(stranger
        .fetch::<Patient, _>(&cx.pool, "persist", &p.id)
        .await
        .is_err());
}

pub async fn ddl_and_registry<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let ddl = schema::create_table_sql::<Patient, DB>().join(";\n");
    eprintln!("{} DDL for Patient:\n{ddl};", DB::DIALECT);
    let (bytes, uuid) = match DB::DIALECT {
        "postgres" => (
            "\"name\" BYTEA NOT NULL",
            "\"id\" UUID NOT NULL PRIMARY KEY",
        ),
        "mysql" => (
            "`name` LONGBLOB NOT NULL",
            "`id` BINARY(16) NOT NULL PRIMARY KEY",
        ),
        _ => ("`name` BLOB NOT NULL", "`id` BLOB NOT NULL PRIMARY KEY"),
    };
    assert!(ddl.contains(bytes), "{ddl}");
    assert!(ddl.contains(uuid), "{ddl}");
    assert!(!ddl.contains("\"dob\" BYTEA NOT NULL") && !ddl.contains("`dob` LONGBLOB NOT NULL"));
    for needle in [
        "patients",
        "rowseal_header",
        "rowseal_key_version",
        "patients_rowseal_kv",
        "dob",
    ] {
        assert!(ddl.contains(needle), "{needle} missing from {ddl}");
    }
    // Idempotent.
    schema::create_table::<Patient, _>(&cx.pool).await.unwrap();
    schema::install(&cx.pool).await.unwrap();

    schema::register::<Patient, _>(&cx.pool).await.unwrap();
    schema::register::<Patient, _>(&cx.pool).await.unwrap();
    schema::register::<Everything, _>(&cx.pool).await.unwrap();
    // The typed entry, in its registry JSON form.
    let def = serde_json::to_value(
        schema::registered(&cx.pool, "patients")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(def["record_type"], "patient");
    assert_eq!(def["tenant"], "tenant_id");
    assert_eq!(def["primary_key"], "id");
    assert_eq!(def["bind_primary_key"], true);
    assert_eq!(def["key_mode"], "derived");
    let fields = def["fields"].as_array().unwrap();
    let dob = fields.iter().find(|f| f["column"] == "dob").unwrap();
    assert_eq!(dob["encrypted"], true);
    assert_eq!(dob["nullable"], true);
    assert_eq!(dob["encoding"], "chrono::NaiveDate");
    assert!(schema::registered(&cx.pool, "nope")
        .await
        .unwrap()
        .is_none());
}

pub async fn kms_mode<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let rows: Vec<Audited> = (0..40)
        .map(|i| Audited {
            key: format!("k{i}"),
            org: if i % 2 == 0 { "o1" } else { "o2" }.into(),
            secret: format!("secret {i}"),
            amount: (i % 3 != 0).then_some(i),
        })
        .collect();
    cx.enc.insert_many(&cx.pool, &rows).await.unwrap();
    cx.enc
        .insert(
            &cx.pool,
            &Audited {
                key: "single".into(),
                org: "o1".into(),
                secret: String::new(),
                amount: None,
            },
        )
        .await
        .unwrap();
    let got = cx
        .enc
        .fetch::<Audited, _>(&cx.pool, "o2", &"k3".to_owned())
        .await
        .unwrap();
    assert_eq!(got.as_ref(), Some(&rows[3]));
    let mut all: Vec<Audited> = cx
        .enc
        .fetch_all(
            TenantScope::Any,
            sqlx::query::<DB>(&select::<Audited, DB>(" WHERE org <> 'none'")),
            &cx.pool,
        )
        .await
        .unwrap();
    all.retain(|a| a.key != "single");
    all.sort_by_key(|a| a.key[1..].parse::<i64>().unwrap());
    assert_eq!(all, rows);
    // Each row has its own wrapped data key in its header, key version 0.
    let sql = "SELECT COUNT(*) FROM audited WHERE rowseal_key_version = 0";
    let row = DB::fetch_optional(&cx.pool, sql, vec![])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.read_value(0, rowseal_sqlx::SqlType::I64).unwrap(),
        Value::I64(41)
    );
    // Field update under the row's own data key.
    let mut a = rows[4].clone();
    a.secret = "changed".into();
    cx.enc
        .update_fields(&cx.pool, &a, &["secret"])
        .await
        .unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Audited, _>(&cx.pool, "o1", &a.key)
            .await
            .unwrap(),
        Some(a)
    );
}

pub async fn query_missing_columns<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    cx.enc
        .insert(&cx.pool, &Patient::new("q", "someone"))
        .await
        .unwrap();
    let r: Result<Vec<Patient>, Error> = cx
        .enc
        .fetch_all(
            TenantScope::Any,
            sqlx::query::<DB>("SELECT id, tenant_id, name FROM patients"),
            &cx.pool,
        )
        .await;
    match r {
        Err(Error::Schema { table, column, .. }) => {
            assert_eq!(table, "patients");
            assert_eq!(column, "dob");
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    // Extra columns and another order are fine.
    let sql = format!(
        "SELECT visits AS extra, {} FROM patients",
        Encryptor::select_list::<Patient, DB>()
    );
    let rows: Vec<Patient> = cx
        .enc
        .fetch_all(TenantScope::Any, sqlx::query::<DB>(&sql), &cx.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

/// Reads one plain column of a `users` row as i64 (NULL: None).
async fn user_cell_i64<DB: Backend>(pool: &sqlx::Pool<DB>, column: &str, id: i64) -> Option<i64>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from("SELECT ");
    DB::push_ident(&mut sql, column);
    sql.push_str(" FROM users WHERE id = ");
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_optional(pool, &sql, vec![Value::I64(id)])
        .await
        .unwrap()
        .unwrap();
    match row.read_value(0, rowseal_sqlx::SqlType::I64).unwrap() {
        Value::I64(v) => Some(v),
        Value::Null(_) => None,
        other => panic!("unexpected {:?}", other.sql_type()),
    }
}

fn ids(rows: &[User]) -> Vec<i64> {
    let mut v: Vec<i64> = rows.iter().map(|u| u.id).collect();
    v.sort_unstable();
    v
}

/// Normalization, forced collisions, several values, compound lookups.
pub async fn blind_index_lookups<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let users: Vec<User> = (1..=40)
        .map(|i| User::new(i, "t1", &format!("User{i}@Example.com")))
        .collect();
    cx.enc.insert_many(&cx.pool, &users).await.unwrap();

    // Case and whitespace variants, through normalization.
    let found = User::find_by_email(&cx.enc, &cx.pool, "t1", "  user7@EXAMPLE.COM ")
        .await
        .unwrap();
    assert_eq!(found, vec![users[6].clone()]);
    assert!(
        User::find_by_email(&cx.enc, &cx.pool, "t1", "nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );

    // A 3-bit index: 40 rows share 8 index values, so the database returns
    // false positives, and only the true match comes back.
    let mut collided = false;
    for u in &users {
        let ssn = u.ssn.clone().unwrap();
        let found = User::find_by_ssn(&cx.enc, &cx.pool, "t1", &ssn)
            .await
            .unwrap();
        assert_eq!(ids(&found), vec![u.id], "ssn lookup of row {}", u.id);
        // Formatting differences are normalized away (digits only).
        let spaced = ssn.replace('-', " ");
        let found = User::find_by_ssn(&cx.enc, &cx.pool, "t1", &spaced)
            .await
            .unwrap();
        assert_eq!(ids(&found), vec![u.id]);
        let bucket = user_cell_i64(&cx.pool, "ssn_idx", u.id).await.unwrap();
        assert!((0..8).contains(&bucket));
        let mut sql = String::from("SELECT id FROM users WHERE ssn_idx = ");
        DB::push_placeholder(&mut sql, 1);
        let same = DB::fetch_all(&cx.pool, &sql, vec![Value::I64(bucket)])
            .await
            .unwrap()
            .len();
        collided |= same > 1;
    }
    assert!(collided, "40 rows in 8 buckets must collide");

    // Several values at once.
    let found = User::find_by_email_in(
        &cx.enc,
        &cx.pool,
        "t1",
        &[["USER1@example.com"], ["user2@example.com "], ["nobody@x"]],
    )
    .await
    .unwrap();
    assert_eq!(ids(&found), vec![1, 2]);
    let found = User::find_by_ssn_in(
        &cx.enc,
        &cx.pool,
        "t1",
        &[
            [users[3].ssn.as_deref().unwrap()],
            [users[4].ssn.as_deref().unwrap()],
        ],
    )
    .await
    .unwrap();
    assert_eq!(ids(&found), vec![4, 5]);

    // Compound: both parts must match, each normalized; parts are
    // length-prefixed so that shifting characters between them does not match.
    let mut odd = User::new(100, "t1", "odd@example.com");
    odd.last_name = "ab".into();
    odd.city = "c".into();
    cx.enc.insert(&cx.pool, &odd).await.unwrap();
    let found = User::find_by_name_city(&cx.enc, &cx.pool, "t1", " NAME12 ", "london")
        .await
        .unwrap();
    assert_eq!(ids(&found), vec![12]);
    assert!(
        User::find_by_name_city(&cx.enc, &cx.pool, "t1", "name12", "paris")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&User::find_by_name_city(&cx.enc, &cx.pool, "t1", "AB", "C")
            .await
            .unwrap()),
        vec![100]
    );
    assert!(User::find_by_name_city(&cx.enc, &cx.pool, "t1", "a", "bc")
        .await
        .unwrap()
        .is_empty());
    let found = User::find_by_name_city_in(
        &cx.enc,
        &cx.pool,
        "t1",
        &[["name3", "London"], ["name4", "LONDON"], ["name5", "Paris"]],
    )
    .await
    .unwrap();
    assert_eq!(ids(&found), vec![3, 4]);
    // Per-field normalization: digits for the SSN, trim+lowercase for the city.
    let ssn = users[8].ssn.clone().unwrap().replace('-', " / ");
    let found = User::find_by_ssn_city(&cx.enc, &cx.pool, "t1", &ssn, " LONDON ")
        .await
        .unwrap();
    assert_eq!(ids(&found), vec![9]);

    // Tenant scope: another tenant finds nothing.
    assert!(
        User::find_by_email(&cx.enc, &cx.pool, "t2", "user7@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    // A lookup in a tenant that never wrote creates no key.
    let count_keys = || async {
        let rows = DB::fetch_all(&cx.pool, "SELECT COUNT(*) FROM rowseal_keys", vec![])
            .await
            .unwrap();
        match rows[0].read_value(0, rowseal_sqlx::SqlType::I64).unwrap() {
            Value::I64(n) => n,
            other => panic!("count: {:?}", other.sql_type()),
        }
    };
    let before = count_keys().await;
    assert!(
        User::find_by_email(&cx.enc, &cx.pool, "no-such-tenant", "a@b.c")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(count_keys().await, before);
    // Wrong arity through the generic entry point is a typed error.
    let err = cx
        .enc
        .find_by::<User, _>(&cx.pool, Some("t1"), "name_city_idx", &[&["only one"]])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(!err.to_string().contains("only one"));
}

/// Tenant vs global scope, bytes storage, custom normalizers, DDL, registry.
pub async fn blind_index_scopes_and_storage<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut a = User::new(1, "t1", "same@example.com");
    a.alias = Some("Ada+news@example.com".into());
    let b = User::new(2, "t2", "SAME@example.com");
    cx.enc.insert(&cx.pool, &a).await.unwrap();
    cx.enc.insert(&cx.pool, &b).await.unwrap();
    // Tenant scope: unrelated index values; global scope: equal ones.
    let (ea, eb) = (
        user_cell_i64(&cx.pool, "email_idx", 1).await,
        user_cell_i64(&cx.pool, "email_idx", 2).await,
    );
    assert!(ea.is_some() && eb.is_some());
    assert_ne!(ea, eb);
    let (la, lb) = (
        user_cell_i64(&cx.pool, "login_bidx", 1).await,
        user_cell_i64(&cx.pool, "login_bidx", 2).await,
    );
    assert!(la.is_some());
    assert_eq!(la, lb);
    // Global lookup (no tenant): both rows.
    let found = User::find_by_login(&cx.enc, &cx.pool, " same@EXAMPLE.com")
        .await
        .unwrap();
    assert_eq!(ids(&found), vec![1, 2]);
    assert_eq!(
        cx.enc
            .blind_index_value::<User>("login_idx", "t1", &["same@example.com"])
            .await
            .unwrap(),
        cx.enc
            .blind_index_value::<User>("login_idx", "t2", &["SAME@example.com"])
            .await
            .unwrap()
    );
    assert_ne!(
        cx.enc
            .blind_index_value::<User>("email_idx", "t1", &["same@example.com"])
            .await
            .unwrap(),
        cx.enc
            .blind_index_value::<User>("email_idx", "t2", &["same@example.com"])
            .await
            .unwrap()
    );
    // Over 64 bits: bytes; the custom step drops "+news"; NULL stays NULL.
    let v = cx
        .enc
        .blind_index_value::<User>("alias_idx", "t1", &["ada@example.com"])
        .await
        .unwrap();
    assert!(matches!(&v, rowseal_sqlx::BlindIndexValue::Bytes(b) if b.len() == 16));
    let found = User::find_by_alias(&cx.enc, &cx.pool, "t1", " ADA+other@example.com")
        .await
        .unwrap();
    assert_eq!(ids(&found), vec![1]);
    // A NULL field: NULL index value, still stamped with the version.
    assert_eq!(user_cell_i64(&cx.pool, "alias_idx", 2).await, None);
    assert_eq!(user_cell_i64(&cx.pool, "alias_idx_kv", 2).await, Some(1));
    assert_eq!(user_cell_i64(&cx.pool, "alias_idx_kv", 1).await, Some(1));
    // Outside a rotation the alternate slot (even versions) is empty.
    assert_eq!(user_cell_i64(&cx.pool, "alias_idx_alt_kv", 1).await, None);

    // DDL: index columns and database indexes.
    let ddl = schema::create_table_sql::<User, DB>().join(";\n");
    eprintln!("{} DDL for User:\n{ddl};", DB::DIALECT);
    let (bigint, bytes) = match DB::DIALECT {
        "postgres" => ("\"email_idx\" BIGINT", "\"alias_idx\" BYTEA"),
        "mysql" => ("`email_idx` BIGINT", "`alias_idx` VARBINARY(255)"),
        _ => ("`email_idx` INTEGER", "`alias_idx` BLOB"),
    };
    assert!(ddl.contains(bigint), "{ddl}");
    assert!(ddl.contains(bytes), "{ddl}");
    assert!(ddl.contains("UNIQUE INDEX"), "{ddl}");
    for needle in [
        "users_email_idx",
        "users_login_idx",
        "users_name_city_idx",
        "email_idx_kv",
        "email_idx_alt",
        "email_idx_alt_kv",
        "users_email_idx_alt",
    ] {
        assert!(ddl.contains(needle), "{needle} in {ddl}");
    }
    // Slot indexes leave NULL slots out where the database can.
    let partial = match DB::DIALECT {
        "postgres" => {
            Some("(\"tenant_id\", \"email_idx_alt\") WHERE \"email_idx_alt\" IS NOT NULL")
        }
        "sqlite" => Some("(`tenant_id`, `email_idx_alt`) WHERE `email_idx_alt` IS NOT NULL"),
        _ => None,
    };
    if let Some(partial) = partial {
        assert!(ddl.contains(partial), "{partial} in {ddl}");
        assert_eq!(
            ddl.matches(" IS NOT NULL").count(),
            2 * <User as rowseal_sqlx::ReadModel>::model().indexes.len(),
            "{ddl}"
        );
    } else {
        assert!(!ddl.contains(" IS NOT NULL"), "{ddl}");
    }

    // The registry records each index for the command-line tool.
    schema::register::<User, _>(&cx.pool).await.unwrap();
    // The typed entry, in its registry JSON form.
    let def = serde_json::to_value(
        schema::registered(&cx.pool, "users")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let idx = def["blind_indexes"].as_array().unwrap();
    assert_eq!(idx.len(), 6);
    let ssn_city = idx.iter().find(|i| i["name"] == "ssn_city_idx").unwrap();
    assert_eq!(
        ssn_city["part_normalization"],
        serde_json::json!(["digits", "trim,lowercase"])
    );
    let email = idx.iter().find(|i| i["name"] == "email_idx").unwrap();
    assert_eq!(email["column"], "email_idx");
    assert_eq!(email["version_column"], "email_idx_kv");
    assert_eq!(email["alt_column"], "email_idx_alt");
    assert_eq!(email["alt_version_column"], "email_idx_alt_kv");
    assert_eq!(email["bits"], 32);
    assert_eq!(email["normalization"], "trim,lowercase");
    assert_eq!(email["scope"], "tenant");
    assert_eq!(email["unique"], true);
    assert_eq!(email["storage"], "bigint");
    let compound = idx.iter().find(|i| i["name"] == "name_city_idx").unwrap();
    assert_eq!(
        compound["columns"],
        serde_json::json!(["last_name", "city"])
    );
    let alias = idx.iter().find(|i| i["name"] == "alias_idx").unwrap();
    assert_eq!(alias["storage"], "bytes");
    assert_eq!(alias["custom_normalizer"], true);
    let login = idx.iter().find(|i| i["name"] == "login_idx").unwrap();
    assert_eq!(login["scope"], "global");
    assert_eq!(login["column"], "login_bidx");
}

/// A unique index rejects a duplicate (after normalization) with a typed
/// error naming the field, never the value.
pub async fn blind_index_unique<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    cx.enc
        .insert(&cx.pool, &User::new(1, "t1", "ada@example.com"))
        .await
        .unwrap();
    let check = |err: Error| {
        match &err {
            Error::UniqueViolation {
                table,
                index,
                fields,
            } => {
                assert_eq!(table, "users");
                assert_eq!(index, "email_idx");
                assert_eq!(fields, &vec!["email".to_string()]);
            }
            other => panic!("expected UniqueViolation, got {other}"),
        }
        let shown = format!("{err} {err:?}").to_lowercase();
        assert!(!shown.contains("ada"), "{shown}");
    };
    check(
        cx.enc
            .insert(&cx.pool, &User::new(2, "t1", " ADA@example.com"))
            .await
            .unwrap_err(),
    );
    check(
        cx.enc
            .insert_many(
                &cx.pool,
                &[
                    User::new(3, "t1", "bob@example.com"),
                    User::new(4, "t1", "Ada@Example.com"),
                ],
            )
            .await
            .unwrap_err(),
    );
    // Another tenant may hold the same value (tenant scope).
    cx.enc
        .insert(&cx.pool, &User::new(5, "t2", "ada@example.com"))
        .await
        .unwrap();
    // Updates too.
    let mut carol = User::new(6, "t1", "carol@example.com");
    cx.enc.insert(&cx.pool, &carol).await.unwrap();
    carol.email = "ADA@example.com".into();
    check(cx.enc.update(&cx.pool, &carol).await.unwrap_err());
    check(
        cx.enc
            .update_fields(&cx.pool, &carol, &["email"])
            .await
            .unwrap_err(),
    );
}

/// Writes keep index columns current; an index value binds into your own
/// query.
pub async fn blind_index_updates_and_own_query<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut u = User::new(1, "t1", "old@example.com");
    cx.enc.insert(&cx.pool, &u).await.unwrap();
    u.email = "new@example.com".into();
    cx.enc
        .update_fields(&cx.pool, &u, &["email"])
        .await
        .unwrap();
    assert!(
        User::find_by_email(&cx.enc, &cx.pool, "t1", "old@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        User::find_by_email(&cx.enc, &cx.pool, "t1", "NEW@example.com")
            .await
            .unwrap(),
        vec![u.clone()]
    );
    // Global index follows the field too.
    assert_eq!(
        ids(&User::find_by_login(&cx.enc, &cx.pool, "new@example.com")
            .await
            .unwrap()),
        vec![1]
    );
    u.city = "Paris".into();
    u.ssn = None;
    cx.enc.update(&cx.pool, &u).await.unwrap();
    assert_eq!(
        ids(
            &User::find_by_name_city(&cx.enc, &cx.pool, "t1", "name1", "paris")
                .await
                .unwrap()
        ),
        vec![1]
    );
    assert_eq!(user_cell_i64(&cx.pool, "ssn_idx", 1).await, None);
    // Updating only the city recomputes the compound index.
    u.city = "Rome".into();
    cx.enc.update_fields(&cx.pool, &u, &["city"]).await.unwrap();
    assert_eq!(
        ids(
            &User::find_by_name_city(&cx.enc, &cx.pool, "t1", "name1", "ROME")
                .await
                .unwrap()
        ),
        vec![1]
    );

    // Your own query with a bound index value.
    let v = cx
        .enc
        .blind_index_value::<User>("email_idx", "t1", &[" New@Example.com"])
        .await
        .unwrap();
    let mut sql = format!(
        "SELECT {} FROM users WHERE tenant_id = ",
        Encryptor::select_list::<User, DB>()
    );
    DB::push_placeholder(&mut sql, 1);
    sql.push_str(" AND email_idx = ");
    DB::push_placeholder(&mut sql, 2);
    assert!(matches!(v, rowseal_sqlx::BlindIndexValue::Int(_)));
    let rows = DB::fetch_all(&cx.pool, &sql, vec![Value::Text("t1".into()), v.into()])
        .await
        .unwrap();
    let rows: Vec<User> = cx.enc.decrypt_all(TenantScope::Any, &rows).await.unwrap();
    assert_eq!(rows, vec![u]);
}

/// Rotating an index key without downtime (pending version, backfill,
/// promotion), with processes one step behind: every lookup from every
/// process finds every row at every step, writes fill both versions, and a
/// unique index holds throughout.
pub async fn blind_index_rotation_mid_backfill<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let scope = rowseal_core::KeyScope::Tenant("t1".into());
    let old: Vec<User> = (1..=30)
        .map(|i| User::new(i, "t1", &format!("u{i}@example.com")))
        .collect();
    cx.enc.insert_many(&cx.pool, &old).await.unwrap();
    let before = cx
        .enc
        .blind_index_value::<User>("email_idx", "t1", &["u1@example.com"])
        .await
        .unwrap();
    // A process that saw version 1 alone and keeps it cached.
    let v1_view = encryptor(&cx.pool, &cx.keyring);
    assert_eq!(
        ids(
            &User::find_by_email(&v1_view, &cx.pool, "t1", "u1@example.com")
                .await
                .unwrap()
        ),
        vec![1]
    );

    // 1. The new version is pending.
    let admin = encryptor(&cx.pool, &cx.keyring);
    let v2 = admin.keys().begin_index_key_rotation(&scope).await.unwrap();
    assert_eq!(v2, 2);
    // A process started now writes and queries both versions.
    let both_view = encryptor(&cx.pool, &cx.keyring);
    let check_all = |label: &'static str, enc: Vec<Encryptor>, rows: Vec<i64>| {
        let pool = cx.pool.clone();
        async move {
            for i in rows {
                let email = format!(" U{i}@Example.com");
                for (n, e) in enc.iter().enumerate() {
                    let found = User::find_by_email(e, &pool, "t1", &email).await.unwrap();
                    assert_eq!(ids(&found), vec![i], "{label}: row {i}, process {n}");
                }
            }
        }
    };
    // Before the backfill, while the v1 process has not caught up yet:
    // its rows and the dual-written ones are found by both.
    v1_view
        .insert(&cx.pool, &User::new(31, "t1", "u31@example.com"))
        .await
        .unwrap();
    let dual: Vec<User> = (101..=110)
        .map(|i| User::new(i, "t1", &format!("u{i}@example.com")))
        .collect();
    both_view.insert_many(&cx.pool, &dual).await.unwrap();
    assert_eq!(user_cell_i64(&cx.pool, "email_idx_kv", 101).await, Some(1));
    assert_eq!(
        user_cell_i64(&cx.pool, "email_idx_alt_kv", 101).await,
        Some(2)
    );
    assert_eq!(user_cell_i64(&cx.pool, "email_idx_alt_kv", 31).await, None);
    check_all(
        "pending",
        vec![v1_view.clone(), both_view.clone()],
        (1..=31).chain(101..=110).collect(),
    )
    .await;
    let values = both_view
        .blind_index_values::<User>("email_idx", "t1", &["u1@example.com"])
        .await
        .unwrap();
    let columns: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
    assert_eq!(columns, vec!["email_idx", "email_idx_alt"]);
    assert_eq!(values[0].1, before);

    // 2. Every process has seen the pending version (here: the v1 process
    // is dropped, as its cache would expire); backfill in batches, checking
    // lookups between batches.
    drop(v1_view);
    for _ in 0..3 {
        assert_eq!(
            admin
                .reindex_batch::<User, _>(&cx.pool, "t1", 5)
                .await
                .unwrap(),
            5
        );
        check_all(
            "mid-backfill",
            vec![both_view.clone(), admin.clone()],
            (1..=31).chain(101..=110).collect(),
        )
        .await;
    }
    let sql = String::from("SELECT id FROM users WHERE email_idx_alt_kv IS NULL");
    let missing = DB::fetch_all(&cx.pool, &sql, vec![]).await.unwrap().len();
    assert_eq!(missing, 31 - 15, "rows still without a version-2 value");
    // Unique holds on both versions, for rows backfilled or not.
    for (dup, who) in [
        ("U101@example.com", 0),
        ("u2@example.com", 1),
        ("u29@example.com", 0),
    ] {
        let e = if who == 0 { &both_view } else { &admin };
        let err = e
            .insert(&cx.pool, &User::new(200, "t1", dup))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UniqueViolation { .. }), "{dup}: {err}");
    }
    // An update during the backfill writes both versions of every index;
    // the backfill leaves that row alone.
    let mut moved = old[29].clone();
    moved.email = "moved@example.com".into();
    both_view.update(&cx.pool, &moved).await.unwrap();
    assert_eq!(
        user_cell_i64(&cx.pool, "email_idx_alt_kv", 30).await,
        Some(2)
    );
    let still = DB::fetch_all(&cx.pool, &sql, vec![]).await.unwrap().len() as u64;
    let mut finished = 0;
    loop {
        let n = admin
            .reindex_batch::<User, _>(&cx.pool, "t1", 4)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        finished += n;
    }
    assert_eq!(
        finished, still,
        "only rows without the new value were written"
    );
    assert!(DB::fetch_all(&cx.pool, &sql, vec![])
        .await
        .unwrap()
        .is_empty());

    // 3. Promotion: version 2 alone for new processes; a process still on
    // the pending view keeps writing and querying both.
    admin.keys().promote_index_key(&scope, v2).await.unwrap();
    let v2_view = encryptor(&cx.pool, &cx.keyring);
    v2_view
        .insert(&cx.pool, &User::new(120, "t1", "u120@example.com"))
        .await
        .unwrap();
    assert_eq!(user_cell_i64(&cx.pool, "email_idx_kv", 120).await, None);
    assert_eq!(
        user_cell_i64(&cx.pool, "email_idx_alt_kv", 120).await,
        Some(2)
    );
    both_view
        .insert(&cx.pool, &User::new(121, "t1", "u121@example.com"))
        .await
        .unwrap();
    let rows: Vec<i64> = (1..=29)
        .chain([31])
        .chain(101..=110)
        .chain([120, 121])
        .collect();
    check_all("promoted", vec![both_view.clone(), v2_view.clone()], rows).await;
    for e in [&both_view, &v2_view] {
        assert_eq!(
            ids(&User::find_by_email(e, &cx.pool, "t1", "MOVED@example.com")
                .await
                .unwrap()),
            vec![30]
        );
        let err = e
            .insert(&cx.pool, &User::new(201, "t1", "u120@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UniqueViolation { .. }), "{err}");
    }
    // After promotion a lookup queries one slot only.
    let values = v2_view
        .blind_index_values::<User>("email_idx", "t1", &["u1@example.com"])
        .await
        .unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].0, "email_idx_alt");

    // Rows written before an index existed (NULL index columns) are not
    // found until re-indexed (under the active version, now 2).
    let mut wipe = String::from(
        "UPDATE users SET email_idx = NULL, email_idx_kv = NULL, email_idx_alt = NULL, email_idx_alt_kv = NULL WHERE id = ",
    );
    DB::push_placeholder(&mut wipe, 1);
    DB::execute(&cx.pool, &wipe, vec![Value::I64(5)])
        .await
        .unwrap();
    assert!(
        User::find_by_email(&v2_view, &cx.pool, "t1", "u5@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        v2_view
            .reindex_batch::<User, _>(&cx.pool, "t1", 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        ids(
            &User::find_by_email(&v2_view, &cx.pool, "t1", "u5@example.com")
                .await
                .unwrap()
        ),
        vec![5]
    );
}

/// Generates one test per case for a database whose `setup()` returns
/// `Option<Ctx<DB>>` (None: skipped).
#[macro_export]
macro_rules! cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            use futures_util::FutureExt as _;
            let Some(cx) = setup().await else { return };
            // Drop the test database even when the case fails.
            let outcome = std::panic::AssertUnwindSafe(suite::$case(&cx))
                .catch_unwind()
                .await;
            cx.finish().await;
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        }
    )*};
}

/// Generates the whole suite.
#[macro_export]
macro_rules! all_cases {
    () => {
        $crate::cases!(
            all_types_round_trip,
            large_values,
            crud,
            bulk_and_queries,
            transactions,
            no_plaintext_in_table,
            tampering,
            keys_persist,
            ddl_and_registry,
            kms_mode,
            query_missing_columns,
            blind_index_lookups,
            blind_index_scopes_and_storage,
            blind_index_unique,
            blind_index_updates_and_own_query,
            blind_index_rotation_mid_backfill,
            registry_round_trip,
            registry_unknown_format,
            tenant_checked_on_every_path,
            tenant_checked_under_case_insensitive_collation,
            other_format_versions_are_typed,
            null_header_refused_without_legacy_columns,
            presence_and_mixing_refused,
            renames_keep_rows_readable,
            format_1_rows_read_and_upgrade,
            stored_bytes_per_row,
            sealed_rows_open_for_their_tenant,
            join_of_two_models,
            typed_tenants,
            bounded_lookup_counts_true_matches,
            bounded_lookup_order_and_filter,
            fetch_many_in_chunks,
            count_and_exists_are_exact,
            index_condition_in_own_query,
            generated_columns,
            partial_views,
            sql_type_fields,
            composite_primary_keys,
            tenant_id_length_is_checked,
            error_kinds_from_real_faults,
            keys_read_in_the_callers_transaction,
            a_snapshot_never_caches_a_shredded_key,
        );
    };
}
