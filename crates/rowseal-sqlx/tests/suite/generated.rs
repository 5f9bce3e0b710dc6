//! Columns the database fills (`#[rowseal(generated)]`) on every database:
//! rowseal never writes them; `insert_returning` reads them back with
//! `INSERT ... RETURNING`.

use rowseal_sqlx::{schema, Backend, Error, Value};

use super::models::{Note, NoteSealed};
use super::Ctx;

pub async fn generated_columns<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> NoteSealed: sqlx::FromRow<'r, DB::Row>,
{
    schema::create_table::<Note, _>(&cx.pool).await.unwrap();
    let org = uuid::Uuid::new_v4();
    let tenant = org.to_string();
    let before = chrono::Utc::now() - chrono::Duration::minutes(5);

    // The database's id, time and default come back; the struct's are ignored.
    let a = cx
        .enc
        .insert_returning(&cx.pool, Note::new(org, "first"))
        .await
        .unwrap();
    let b = cx
        .enc
        .insert_returning(&cx.pool, Note::new(org, "second"))
        .await
        .unwrap();
    assert!(a.id > 0 && b.id > a.id, "identity: {} then {}", a.id, b.id);
    assert!(
        a.created_at > before && a.created_at < chrono::Utc::now() + chrono::Duration::minutes(5)
    );
    assert_eq!((a.revision, b.revision), (7, 7));
    assert_eq!(a.body, "first");
    assert_eq!(
        cx.enc
            .fetch::<Note, _>(&cx.pool, &tenant, &a.id)
            .await
            .unwrap(),
        Some(a.clone())
    );

    // insert and insert_many leave them to the database too.
    cx.enc
        .insert(&cx.pool, &Note::new(org, "third"))
        .await
        .unwrap();
    let many: Vec<Note> = (0..5)
        .map(|i| Note::new(org, &format!("bulk {i}")))
        .collect();
    assert_eq!(cx.enc.insert_many(&cx.pool, &many).await.unwrap(), 5);
    let mut sql = String::from("SELECT * FROM notes ORDER BY id");
    let rows = DB::fetch_all(&cx.pool, &sql, vec![]).await.unwrap();
    let all: Vec<Note> = cx.enc.decrypt_all(&*tenant, &rows).await.unwrap();
    assert_eq!(all.len(), 8);
    let mut ids: Vec<i64> = all.iter().map(|n| n.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 8, "every row got its own id");
    assert!(all.iter().all(|n| n.revision == 7 && n.created_at > before));

    // update never writes them: the stored time and revision stay.
    let mut changed = a.clone();
    changed.body = "first, edited".into();
    changed.created_at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    changed.revision = 100;
    cx.enc.update(&cx.pool, &changed).await.unwrap();
    let stored = cx
        .enc
        .fetch::<Note, _>(&cx.pool, &tenant, &a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.body, "first, edited");
    assert_eq!((stored.created_at, stored.revision), (a.created_at, 7));
    for field in ["created_at", "revision"] {
        assert!(matches!(
            cx.enc.update_fields(&cx.pool, &changed, &[field]).await,
            Err(Error::InvalidInput { .. })
        ));
    }
    cx.enc
        .update_fields(&cx.pool, &changed, &["body"])
        .await
        .unwrap();

    // Sealed rows carry them like any plain column.
    sql = String::from("SELECT * FROM notes WHERE id = ");
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_all(&cx.pool, &sql, vec![Value::I64(b.id)])
        .await
        .unwrap();
    let sealed = <NoteSealed as sqlx::FromRow<'_, DB::Row>>::from_row(&row[0]).unwrap();
    assert_eq!(cx.enc.open(sealed, &*tenant).await.unwrap(), b);
}
