#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on PostgreSQL: a fresh database per test, dropped at the end.
//! `ROWSEAL_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`).

mod suite;

use rowseal_test_support::db;
use suite::Ctx;

async fn setup() -> Option<Ctx<sqlx::Postgres>> {
    Some(Ctx::new(db::postgres(4).await?).await)
}

all_cases!();

/// The same round trip through the unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_round_trip() {
    let Some(db) = db::postgres_socket(4).await else {
        return;
    };
    let cx = Ctx::new(db).await;
    suite::crud(&cx).await;
    suite::all_types_round_trip(&cx).await;
    cx.finish().await;
}

/// A PostgreSQL enum type (created by the application).
#[derive(sqlx::Type, Debug, Clone, Copy, PartialEq)]
#[sqlx(type_name = "mood", rename_all = "lowercase")]
enum Mood {
    Happy,
    Sad,
}

/// Plain columns of types only PostgreSQL has (`database = "postgres"`):
/// an enum type, `NUMERIC`, a text array.
#[derive(rowseal_sqlx::Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "pg_things", record_type = "pg_thing", tenant = tenant_id, primary_key = id)]
struct PgThing {
    id: i64,
    tenant_id: String,
    #[rowseal(sql_type = "mood", database = "postgres")]
    mood: Mood,
    #[rowseal(sql_type = "NUMERIC(12,2)", database = "postgres")]
    price: rust_decimal::Decimal,
    #[rowseal(sql_type = "TEXT[]", database = "postgres")]
    tags: Vec<String>,
    #[rowseal(sql_type = "TEXT[]", database = "postgres")]
    more_tags: Option<Vec<String>>,
    #[rowseal(encrypt)]
    note: String,
}

/// Types only PostgreSQL has pass through untouched, on every path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only_types() {
    use rowseal_sqlx::{schema, Backend};
    let Some(cx) = setup().await else { return };
    sqlx::query("CREATE TYPE mood AS ENUM ('happy', 'sad')")
        .execute(&cx.pool)
        .await
        .unwrap();
    schema::create_table::<PgThing, _>(&cx.pool).await.unwrap();
    let mut a = PgThing {
        id: 1,
        tenant_id: "acme".into(),
        mood: Mood::Happy,
        price: rust_decimal::Decimal::new(12_345, 2),
        tags: vec!["red".into(), "blue".into()],
        more_tags: None,
        note: "secret".into(),
    };
    cx.enc.insert(&cx.pool, &a).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<PgThing, _>(&cx.pool, "acme", &1)
            .await
            .unwrap(),
        Some(a.clone())
    );
    a.mood = Mood::Sad;
    a.more_tags = Some(vec!["x".into()]);
    a.price = rust_decimal::Decimal::new(-1, 2);
    cx.enc.update(&cx.pool, &a).await.unwrap();
    a.tags.push("green".into());
    cx.enc.update_fields(&cx.pool, &a, &["tags"]).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<PgThing, _>(&cx.pool, "acme", &1)
            .await
            .unwrap(),
        Some(a.clone())
    );
    // Stored as PostgreSQL's own types: queryable as such.
    let rows = <sqlx::Postgres as Backend>::fetch_all(
        &cx.pool,
        "SELECT id FROM pg_things WHERE mood = 'sad' AND price < 0 AND 'green' = ANY(tags)",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    cx.finish().await;

    // On another database the same model is refused by a typed error at
    // the first bind (SQLite takes any type name, so the table exists).
    let lite = rowseal_test_support::db::sqlite(1).await;
    schema::install(&lite.pool).await.unwrap();
    schema::create_table::<PgThing, _>(&lite.pool)
        .await
        .unwrap();
    let enc = suite::encryptor(
        &lite.pool,
        &rowseal_core::LocalKeyProvider::generate_keyring(),
    );
    let e = enc.insert(&lite.pool, &a).await.unwrap_err();
    assert!(
        matches!(&e, rowseal_sqlx::Error::Database(_)) && e.to_string().contains("PostgreSQL only"),
        "{e}"
    );
    lite.finish().await;
}
