//! A composite primary key `(tenant, key)` (`primary_key = (org, number)`)
//! on every database: each tenant numbers its own rows, so the same key
//! belongs to several tenants. Every path that finds a row by key finds the
//! tenant's own; a lookup across tenants pages by (key, tenant) and returns
//! each row once; one tenant's row never opens as another's with the same key.

use rowseal_sqlx::{schema, Backend, DbRow, Error, Lookup, ReadModel, Value};
use uuid::Uuid;

use super::models::Invoice;
use super::Ctx;

const NUMBERS: i64 = 6;

pub async fn composite_primary_keys<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    // The DDL declares the pair as the primary key; the registry says so,
    // in the format that older tools refuse.
    let ddl = schema::create_table_sql::<Invoice, DB>().join(";\n");
    let mut pair = String::from("PRIMARY KEY (");
    DB::push_ident(&mut pair, "org");
    pair.push_str(", ");
    DB::push_ident(&mut pair, "number");
    pair.push(')');
    assert!(ddl.contains(&pair), "{ddl}");
    schema::create_table::<Invoice, _>(&cx.pool).await.unwrap();
    schema::register::<Invoice, _>(&cx.pool).await.unwrap();
    let entry = schema::registered(&cx.pool, "invoices")
        .await
        .unwrap()
        .unwrap();
    assert!(entry.tenant_in_primary_key);
    assert_eq!(entry.format, 2);
    assert_eq!(entry, schema::definition(Invoice::model()));

    // Three tenants, each with invoices 1..=6; the database fills issued_at.
    let orgs: Vec<Uuid> = (1..=3u128).map(|i| Uuid::from_u128(i << 64 | i)).collect();
    let mut all = Vec::new();
    for (t, org) in orgs.iter().enumerate() {
        for n in 1..=NUMBERS {
            let row = Invoice::new(*org, n, &format!("customer {t}-{n}"));
            all.push(cx.enc.insert_returning(&cx.pool, row).await.unwrap());
        }
    }
    assert!(all
        .iter()
        .all(|i| i.issued_at > chrono::DateTime::<chrono::Utc>::UNIX_EPOCH));

    // The database refuses the same (tenant, key) twice, and nothing else.
    match cx
        .enc
        .insert(&cx.pool, &Invoice::new(orgs[0], 1, "again"))
        .await
    {
        Err(e @ Error::Database(_)) => {
            assert!(
                matches!(e.as_sqlx(), Some(sqlx::Error::Database(db)) if db.is_unique_violation()),
                "{e}"
            );
            assert_eq!(e.kind(), rowseal_sqlx::ErrorKind::UniqueViolation);
        }
        other => panic!("a second (org, 1): {other:?}"),
    }

    // By key: each tenant's own row, never another's with the same number.
    for expected in &all {
        let tenant = expected.org.to_string();
        let got = cx
            .enc
            .fetch::<Invoice, _>(&cx.pool, &tenant, &expected.number)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(expected));
    }
    let first = orgs[0].to_string();
    let many = cx
        .enc
        .fetch_many::<Invoice, _>(&cx.pool, &first, &[1, 2, 3, 99])
        .await
        .unwrap();
    assert_eq!(many.len(), 3);
    assert!(many.iter().all(|i| i.org == orgs[0]));

    // update and delete touch the tenant's row only.
    let mut edited = all[2].clone(); // orgs[0], number 3
    edited.customer = "edited".into();
    cx.enc.update(&cx.pool, &edited).await.unwrap();
    assert!(cx
        .enc
        .delete::<Invoice, _>(&cx.pool, &first, &4)
        .await
        .unwrap());
    for org in &orgs[1..] {
        let t = org.to_string();
        let three = cx
            .enc
            .fetch::<Invoice, _>(&cx.pool, &t, &3)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(three.customer, "edited");
        assert!(cx
            .enc
            .fetch::<Invoice, _>(&cx.pool, &t, &4)
            .await
            .unwrap()
            .is_some());
    }
    all.retain(|i| !(i.org == orgs[0] && i.number == 4));
    if let Some(i) = all.iter_mut().find(|i| i.org == orgs[0] && i.number == 3) {
        i.customer = "edited".into();
    }

    // A tenant-scoped lookup finds its tenant's row only.
    let found = cx
        .enc
        .find_by_with::<Invoice, _>(
            &cx.pool,
            Some(&orgs[1].to_string()),
            "inv_customer_idx",
            &[&["Customer 1-5 "]],
            &Lookup::new(),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].org, found[0].number), (orgs[1], 5));

    // A global lookup across tenants, one row a page: every tenant's invoice
    // of that number shares the reference and the key, so pages end between
    // rows with the same key; each comes back once, none is skipped.
    for number in [1, 3, 6] {
        let reference = format!("REF-{number}");
        for options in [
            Lookup::new().page_size(1),
            Lookup::new().page_size(2),
            Lookup::new(),
        ] {
            let found = cx
                .enc
                .find_by_with::<Invoice, _>(
                    &cx.pool,
                    None,
                    "inv_reference_idx",
                    &[&[reference.as_str()]],
                    &options,
                )
                .await
                .unwrap();
            let mut got: Vec<(Uuid, i64)> = found.iter().map(|i| (i.org, i.number)).collect();
            got.sort();
            let want: Vec<(Uuid, i64)> = orgs.iter().map(|o| (*o, number)).collect();
            assert_eq!(got, want, "{reference} with {options:?}");
        }
        let limited = cx
            .enc
            .find_by_with::<Invoice, _>(
                &cx.pool,
                None,
                "inv_reference_idx",
                &[&[reference.as_str()]],
                &Lookup::new().limit(2),
            )
            .await
            .unwrap();
        assert_eq!(limited.len(), 2, "limit counts rows, not keys");
        assert_ne!(limited[0].org, limited[1].org);
    }

    // One tenant's row moved onto another tenant's row with the same key
    // (its ciphertexts and header, the key bound into them identical) does
    // not open: the tenant is bound into the row key.
    let second = orgs[1].to_string();
    let columns = ["customer", "reference", "amount_cents", "rowseal_header"];
    let mut select = String::from("SELECT ");
    let mut update = String::from("UPDATE invoices SET ");
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            select.push_str(", ");
            update.push_str(", ");
        }
        DB::push_ident(&mut select, c);
        DB::push_ident(&mut update, c);
        update.push_str(" = ");
        DB::push_placeholder(&mut update, i + 1);
    }
    select.push_str(" FROM invoices WHERE org = ");
    DB::push_placeholder(&mut select, 1);
    select.push_str(" AND number = 2");
    let rows = DB::fetch_all(
        &cx.pool,
        &select,
        vec![Invoice::model().tenant_value(&first).unwrap()],
    )
    .await
    .unwrap();
    let mut values: Vec<Value> = (0..columns.len())
        .map(|i| Value::Bytes(rows[0].read_opt_bytes(i).unwrap().unwrap().to_vec()))
        .collect();
    update.push_str(" WHERE org = ");
    DB::push_placeholder(&mut update, columns.len() + 1);
    update.push_str(" AND number = 2");
    values.push(Invoice::model().tenant_value(&second).unwrap());
    assert_eq!(DB::execute(&cx.pool, &update, values).await.unwrap(), 1);
    match cx.enc.fetch::<Invoice, _>(&cx.pool, &second, &2).await {
        Err(Error::Field {
            table, primary_key, ..
        }) => {
            assert_eq!((table.as_str(), primary_key.as_str()), ("invoices", "2"));
        }
        other => panic!("another tenant's row with the same key opened: {other:?}"),
    }
    // The row it was copied from still reads.
    assert!(cx
        .enc
        .fetch::<Invoice, _>(&cx.pool, &first, &2)
        .await
        .unwrap()
        .is_some());
}
