//! Plain fields of the application's own sqlx types (`#[rowseal(sql_type =
//! "...")]`: a `sqlx::Type` enum, a newtype, an `Option` of one) on every
//! database: bound and decoded by sqlx, untouched by rowseal, on every path.

use rowseal_sqlx::{schema, Backend, DbRow, Encryptor, SqlType, Value};

use super::models::{Label, Priority, Ticket, TicketPriority, TicketSealed};
use super::Ctx;

fn ticket(id: i64, priority: Priority, escalation: Option<Priority>, label: &str) -> Ticket {
    Ticket {
        id,
        tenant_id: "acme".into(),
        priority,
        escalation,
        label: Label(label.into()),
        body: format!("ticket {id}"),
    }
}

pub async fn sql_type_fields<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> TicketSealed: sqlx::FromRow<'r, DB::Row>,
{
    schema::create_table::<Ticket, _>(&cx.pool).await.unwrap();
    let ddl = schema::create_table_sql::<Ticket, DB>()[0].clone();
    assert!(ddl.contains("VARCHAR(64)"), "{ddl}");

    let mut a = ticket(1, Priority::High, None, "billing");
    let b = ticket(2, Priority::Low, Some(Priority::High), "login");
    cx.enc.insert(&cx.pool, &a).await.unwrap();
    cx.enc
        .insert_many(
            &cx.pool,
            &[b.clone(), ticket(3, Priority::Low, None, "misc")],
        )
        .await
        .unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Ticket, _>(&cx.pool, "acme", &1)
            .await
            .unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        cx.enc
            .fetch::<Ticket, _>(&cx.pool, "acme", &2)
            .await
            .unwrap(),
        Some(b.clone())
    );

    // Stored as sqlx stores them: the enum as its integer, the newtype as text.
    let mut sql = String::from("SELECT priority, label FROM tickets WHERE id = ");
    DB::push_placeholder(&mut sql, 1);
    let raw = DB::fetch_all(&cx.pool, &sql, vec![Value::I64(2)])
        .await
        .unwrap();
    assert_eq!(raw[0].read_value(0, SqlType::I32).unwrap(), Value::I32(1));
    assert_eq!(
        raw[0].read_value(1, SqlType::Text).unwrap(),
        Value::Text("login".into())
    );

    // update, and update_fields of a sql_type field alone.
    a.escalation = Some(Priority::Low);
    a.label = Label("billing-2".into());
    cx.enc.update(&cx.pool, &a).await.unwrap();
    a.priority = Priority::Low;
    cx.enc
        .update_fields(&cx.pool, &a, &["priority"])
        .await
        .unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Ticket, _>(&cx.pool, "acme", &1)
            .await
            .unwrap(),
        Some(a.clone())
    );

    // Your own query on the column, decrypted rows and sealed rows.
    let mut sql = format!(
        "SELECT {} FROM tickets WHERE priority = ",
        Encryptor::select_list::<Ticket, DB>()
    );
    DB::push_placeholder(&mut sql, 1);
    sql.push_str(" ORDER BY id");
    let rows = DB::fetch_all(&cx.pool, &sql, vec![Value::I32(1)])
        .await
        .unwrap();
    let low: Vec<Ticket> = cx.enc.decrypt_all("acme", &rows).await.unwrap();
    assert_eq!(low.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    let sealed: Vec<TicketSealed> = rows
        .iter()
        .map(|r| <TicketSealed as sqlx::FromRow<'_, DB::Row>>::from_row(r).unwrap())
        .collect();
    assert_eq!(cx.enc.open_all(sealed, "acme").await.unwrap(), low);

    // A partial view reads it too.
    let view = cx
        .enc
        .fetch::<TicketPriority, _>(&cx.pool, "acme", &2)
        .await
        .unwrap();
    assert_eq!(
        view,
        Some(TicketPriority {
            id: 2,
            priority: Priority::Low
        })
    );
}
