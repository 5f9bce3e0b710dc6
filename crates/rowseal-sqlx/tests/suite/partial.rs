//! Partial views (`#[rowseal(partial_of = Model)]`) on every database: they
//! fetch and decrypt only the fields they name, yet the row key still binds
//! every encrypted field's presence, so a row tampered in a field the view
//! does not read still fails to open.

use rowseal_sqlx::{Backend, Encryptor, Error, TenantScope, Value};

use super::models::{Audited, AuditedAmount, Patient, PatientCard};
use super::{raw_get, raw_set, Ctx};

pub async fn partial_views<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut with_notes = Patient::new("acme", "Ada Lovelace");
    with_notes.birth_date = None;
    let mut without_notes = Patient::new("acme", "Alan Turing");
    without_notes.notes = None;
    let other = Patient::new("globex", "Grace Hopper");
    cx.enc
        .insert_many(
            &cx.pool,
            &[with_notes.clone(), without_notes.clone(), other.clone()],
        )
        .await
        .unwrap();

    // What the view selects: its own columns, the tenant, the header, and
    // only whether `notes` is present.
    let list = Encryptor::select_list::<PatientCard, DB>();
    let mut notes = String::new();
    DB::push_ident(&mut notes, "notes");
    assert!(
        !list.contains(&format!("{notes},")) && !list.ends_with(&notes),
        "{list}"
    );
    assert!(list.contains("rowseal_present__notes"), "{list}");
    assert!(!list.contains("visits"), "{list}");

    // By primary key, and from a query of its own; rows with and without
    // the field it leaves out.
    for p in [&with_notes, &without_notes] {
        let card = cx
            .enc
            .fetch::<PatientCard, _>(&cx.pool, "acme", &p.id)
            .await
            .unwrap();
        assert_eq!(card, Some(PatientCard::from(p)));
    }
    let mut sql = format!("SELECT {list} FROM patients WHERE tenant_id = ");
    DB::push_placeholder(&mut sql, 1);
    let rows = DB::fetch_all(&cx.pool, &sql, vec![Value::Text("acme".into())])
        .await
        .unwrap();
    let mut cards: Vec<PatientCard> = cx.enc.decrypt_all("acme", &rows).await.unwrap();
    cards.sort_by_key(|c| c.id);
    let mut want = vec![
        PatientCard::from(&with_notes),
        PatientCard::from(&without_notes),
    ];
    want.sort_by_key(|c| c.id);
    assert_eq!(cards, want);

    // Another tenant's row: refused by name, as for whole models.
    let all = DB::fetch_all(&cx.pool, &format!("SELECT {list} FROM patients"), vec![])
        .await
        .unwrap();
    assert!(matches!(
        cx.enc.decrypt_all::<PatientCard, _>("acme", &all).await,
        Err(Error::TenantMismatch { .. })
    ));
    assert_eq!(
        cx.enc
            .decrypt_all::<PatientCard, _>(TenantScope::Any, &all)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        cx.enc
            .fetch::<PatientCard, _>(&cx.pool, "acme", &other.id)
            .await
            .unwrap(),
        None
    );

    // A field the view does not read, NULLed or filled behind rowseal's
    // back: the presence the row key binds no longer holds.
    let stored_notes = raw_get(
        &cx.pool,
        "patients",
        "notes",
        "id",
        Value::Uuid(with_notes.id),
    )
    .await;
    let mut null = String::from("UPDATE patients SET notes = NULL WHERE id = ");
    DB::push_placeholder(&mut null, 1);
    DB::execute(&cx.pool, &null, vec![Value::Uuid(with_notes.id)])
        .await
        .unwrap();
    let e = cx
        .enc
        .fetch::<PatientCard, _>(&cx.pool, "acme", &with_notes.id)
        .await
        .unwrap_err();
    assert!(e.is_decrypt(), "{e}");
    raw_set(
        &cx.pool,
        "patients",
        "notes",
        "id",
        Value::Uuid(without_notes.id),
        stored_notes.clone(),
    )
    .await;
    let e = cx
        .enc
        .fetch::<PatientCard, _>(&cx.pool, "acme", &without_notes.id)
        .await
        .unwrap_err();
    assert!(e.is_decrypt(), "{e}");
    raw_set(
        &cx.pool,
        "patients",
        "notes",
        "id",
        Value::Uuid(with_notes.id),
        stored_notes,
    )
    .await;
    assert_eq!(
        cx.enc
            .fetch::<PatientCard, _>(&cx.pool, "acme", &with_notes.id)
            .await
            .unwrap(),
        Some(PatientCard::from(&with_notes))
    );

    // kms mode: the same, one data key per row.
    let a = Audited {
        key: "k-9".into(),
        org: "acme".into(),
        secret: "s3cret".into(),
        amount: Some(12),
    };
    cx.enc.insert(&cx.pool, &a).await.unwrap();
    let view = cx
        .enc
        .fetch::<AuditedAmount, _>(&cx.pool, "acme", &"k-9".to_owned())
        .await
        .unwrap();
    assert_eq!(
        view,
        Some(AuditedAmount {
            key: "k-9".into(),
            org: "acme".into(),
            amount: Some(12),
        })
    );
}
