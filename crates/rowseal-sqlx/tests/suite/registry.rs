//! The schema registry as the command-line tool reads it: typed entries that
//! round-trip, and entries of another format refused by name.

use rowseal_sqlx::schema::{self, TableSchema, REGISTRY_FORMAT};
use rowseal_sqlx::{Backend, Encrypted, Error, ReadModel, Value};

use super::models::{Audited, Everything, Invoice, Patient, User};
use super::Ctx;

/// Registers `T`, then reads its entry back both ways the registry is read
/// (one table, as the library does; every table, as the tool does).
async fn assert_round_trip<T: Encrypted, DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let expected = schema::definition(T::model());
    // Format 2 only for a composite primary key, which tools that
    // predate it must refuse; every other entry stays readable by them.
    let format = if T::model().tenant_in_primary_key {
        2
    } else {
        1
    };
    assert_eq!(expected.format, format);
    schema::register::<T, _>(&cx.pool).await.unwrap();
    let one = schema::registered(&cx.pool, T::model().table())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one, expected, "{}: registered()", T::model().table());
    let mut conn = cx.pool.acquire().await.unwrap();
    let all = schema::registered_tables::<DB>(&mut conn).await.unwrap();
    let listed = all
        .iter()
        .find(|t| t.table == T::model().table())
        .expect("listed");
    assert_eq!(
        listed,
        &expected,
        "{}: registered_tables()",
        T::model().table()
    );
}

/// Every model of the suite, written to the registry and read back through
/// the tool's path, equals the schema built from the model.
pub async fn registry_round_trip<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    assert_round_trip::<Patient, DB>(cx).await;
    assert_round_trip::<Everything, DB>(cx).await;
    assert_round_trip::<Audited, DB>(cx).await;
    assert_round_trip::<User, DB>(cx).await;
    assert_round_trip::<Invoice, DB>(cx).await;

    // What the typed entry says, spot-checked against the models.
    let users = schema::definition(User::model());
    let email = users
        .blind_indexes
        .iter()
        .find(|i| i.name == "email_idx")
        .unwrap();
    assert_eq!(email.slot(1), ("email_idx", "email_idx_kv"));
    assert_eq!(email.slot(2), ("email_idx_alt", "email_idx_alt_kv"));
    assert_eq!(email.slot(3), email.slot(1));
    let def = User::model().index("email_idx").unwrap();
    for v in 1..6 {
        assert_eq!(
            def.slot(v),
            email.slot(v),
            "model and schema agree on slots"
        );
    }
    let patients = schema::definition(Patient::model());
    let pk = Value::Text("row-1".into());
    assert_eq!(
        patients.primary_key_bytes(&pk).unwrap(),
        Patient::model().primary_key_bytes(&pk).unwrap()
    );
    assert!(patients.bind_primary_key && patients.primary_key_bytes(&pk).unwrap().is_some());
}

async fn put_entry<DB: Backend>(cx: &Ctx<DB>, table: &str, definition: &str)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from(
        "INSERT INTO rowseal_schema (table_name, record_type, tenant_column, primary_key_column, key_mode, bind_primary_key, definition) VALUES (",
    );
    for i in 1..=7 {
        if i > 1 {
            sql.push_str(", ");
        }
        DB::push_placeholder(&mut sql, i);
    }
    sql.push(')');
    DB::execute(
        &cx.pool,
        &sql,
        vec![
            Value::Text(table.into()),
            Value::Text("r".into()),
            Value::Text("tenant_id".into()),
            Value::Text("id".into()),
            Value::Text("derived".into()),
            Value::Bool(false),
            Value::Text(definition.into()),
        ],
    )
    .await
    .unwrap();
}

/// A registry entry of a format this version does not read is a typed error
/// naming the table, on both read paths; a damaged one is a schema error.
pub async fn registry_unknown_format<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut future: serde_json::Value =
        serde_json::to_value(schema::definition(Patient::model())).unwrap();
    future["format"] = serde_json::json!(REGISTRY_FORMAT + 1);
    put_entry(cx, "from_the_future", &future.to_string()).await;

    match schema::registered(&cx.pool, "from_the_future").await {
        Err(Error::UnsupportedRegistryFormat { table, format }) => {
            assert_eq!(table, "from_the_future");
            assert_eq!(format, u64::from(REGISTRY_FORMAT + 1));
        }
        other => panic!("expected UnsupportedRegistryFormat, got {other:?}"),
    }
    let mut conn = cx.pool.acquire().await.unwrap();
    let err = schema::registered_tables::<DB>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedRegistryFormat { table, .. } if table == "from_the_future"),
        "{err:?}"
    );
    assert!(err.to_string().contains("from_the_future"), "{err}");

    // The same entry under its own format number reads.
    future["format"] = serde_json::json!(1);
    let text = future.to_string();
    let back = TableSchema::from_registry_json("patients", &text).unwrap();
    assert_eq!(back, schema::definition(Patient::model()));

    // Damaged entries: not JSON, no format, a covered column that is no field.
    for (name, text) in [
        ("not_json", "{".to_owned()),
        ("no_format", r#"{"table": "x"}"#.to_owned()),
        ("composite_in_format_1", {
            let mut v = serde_json::to_value(schema::definition(Invoice::model())).unwrap();
            v["format"] = serde_json::json!(1);
            v.to_string()
        }),
        ("bad_index", {
            let mut v = serde_json::to_value(schema::definition(User::model())).unwrap();
            v["blind_indexes"][0]["columns"] = serde_json::json!(["nope"]);
            v.to_string()
        }),
    ] {
        match TableSchema::from_registry_json(name, &text) {
            Err(Error::Schema { table, .. }) => assert_eq!(table, name),
            other => panic!("{name}: expected a schema error, got {other:?}"),
        }
    }
}
