//! Sealed rows and typed tenants on every database: rows read by sqlx itself
//! (`query_as` through the generated `FromRow`), opened for a tenant, one
//! at a time and in parallel batches; joins of two models through prefixed
//! select lists; models whose tenant is a UUID, an integer or a newtype.

use rowseal_sqlx::{schema, Backend, Encryptor, Error, TenantScope, Value};
use sqlx::FromRow;

use super::models::{
    Audited, AuditedSealed, OrgId, OrgNote, Patient, PatientSealed, UuidTenant, UuidTenantSealed,
    Visit, VisitSealed,
};
use super::Ctx;

fn placeholder<DB: Backend>(n: usize) -> String {
    let mut s = String::new();
    DB::push_placeholder(&mut s, n);
    s
}

/// Runs `sql` with `binds` and reads each row as `S` through its `FromRow`
/// impl (what `sqlx::query_as` does).
async fn query_as<DB: Backend, S>(pool: &sqlx::Pool<DB>, sql: &str, binds: Vec<Value>) -> Vec<S>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> S: FromRow<'r, DB::Row>,
{
    DB::fetch_all(pool, sql, binds)
        .await
        .unwrap()
        .iter()
        .map(|r| S::from_row(r).unwrap())
        .collect()
}

fn is_tenant_mismatch(r: &rowseal_sqlx::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(Error::TenantMismatch { .. }))
}

/// `query_as` fills the generated sealed type (by column name, extra
/// columns ignored); `open`, `open_all` and `open_each` give back the rows
/// written, refuse another tenant's rows by name on every path, and fail
/// closed on a row whose sealed bytes or tenant were changed.
pub async fn sealed_rows_open_for_their_tenant<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> PatientSealed: sqlx::FromRow<'r, DB::Row>,
    for<'r> AuditedSealed: sqlx::FromRow<'r, DB::Row>,
{
    let mut acme: Vec<Patient> = (0..5)
        .map(|i| Patient::new("acme", &format!("Patient {i}")))
        .collect();
    acme[1].notes = None;
    acme[2].birth_date = None;
    let other = Patient::new("globex", "Someone Else");
    cx.enc.insert_many(&cx.pool, &acme).await.unwrap();
    cx.enc.insert(&cx.pool, &other).await.unwrap();

    let by_tenant = format!(
        "SELECT * FROM patients WHERE tenant_id = {} ORDER BY name",
        placeholder::<DB>(1)
    );
    let sealed: Vec<PatientSealed> =
        query_as(&cx.pool, &by_tenant, vec![Value::Text("acme".into())]).await;
    assert_eq!(sealed.len(), 5);
    assert!(
        sealed.iter().all(|s| s
            .name
            .as_deref()
            .is_some_and(|n| !n.starts_with(b"Patient"))),
        "the sealed type holds ciphertext"
    );
    let mut opened = cx.enc.open_all(sealed, "acme").await.unwrap();
    opened.sort_by_key(|p| p.id);
    acme.sort_by_key(|p| p.id);
    assert_eq!(opened, acme);

    // Another tenant's row: refused by name, on open, open_all, open_each.
    let all = "SELECT * FROM patients";
    let mixed = || query_as::<DB, PatientSealed>(&cx.pool, all, vec![]);
    let theirs = mixed()
        .await
        .into_iter()
        .find(|s| s.tenant_id == "globex")
        .unwrap();
    assert!(is_tenant_mismatch(&cx.enc.open(theirs, "acme").await));
    assert!(is_tenant_mismatch(
        &cx.enc.open_all(mixed().await, "acme").await
    ));
    let each = cx.enc.open_each(mixed().await, "acme").await.unwrap();
    assert_eq!(each.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(each.iter().filter(|r| is_tenant_mismatch(r)).count(), 1);
    let any = cx
        .enc
        .open_all(mixed().await, TenantScope::Any)
        .await
        .unwrap();
    assert_eq!(any.len(), 6);

    // Changed in memory before opening: a ciphertext of another row, the
    // tenant claimed for a row of another, a NULL header, a NULLed field.
    let fresh = || async {
        let mut v = mixed().await;
        v.sort_by_key(|s| s.id);
        v.retain(|s| s.tenant_id == "acme" && s.notes.is_some());
        v
    };
    let mut v = fresh().await;
    v[0].name = v[1].name.clone();
    assert!(cx
        .enc
        .open(v.remove(0), "acme")
        .await
        .unwrap_err()
        .is_decrypt());
    let mut moved = mixed()
        .await
        .into_iter()
        .find(|s| s.tenant_id == "globex")
        .unwrap();
    moved.tenant_id = "acme".into();
    assert!(cx.enc.open(moved, "acme").await.unwrap_err().is_decrypt());
    let mut v = fresh().await;
    v[0].rowseal_header = None;
    assert!(cx
        .enc
        .open(v.remove(0), "acme")
        .await
        .unwrap_err()
        .is_decrypt());
    let mut v = fresh().await;
    v[0].notes = None;
    assert!(cx
        .enc
        .open(v.remove(0), "acme")
        .await
        .unwrap_err()
        .is_decrypt());
    let mut v = fresh().await;
    v[0].visits += 1; // plain columns are not bound: a plain change opens
    assert!(cx.enc.open(v.remove(0), "acme").await.is_ok());

    // A batch large enough to open on several threads, off the runtime.
    let many: Vec<Patient> = (0..700)
        .map(|i| Patient::new("bulk", &format!("Bulk {i}")))
        .collect();
    cx.enc.insert_many(&cx.pool, &many).await.unwrap();
    let enc = cx.enc.clone().with_parallel_threshold(64).with_threads(3);
    let sealed: Vec<PatientSealed> =
        query_as(&cx.pool, &by_tenant, vec![Value::Text("bulk".into())]).await;
    let mut opened = enc.open_all(sealed, "bulk").await.unwrap();
    opened.sort_by_key(|p| p.id);
    let mut many = many;
    many.sort_by_key(|p| p.id);
    assert_eq!(opened, many);
    let sealed: Vec<PatientSealed> = mixed().await;
    let each = enc.open_each(sealed, "bulk").await.unwrap();
    assert_eq!(each.iter().filter(|r| r.is_ok()).count(), 700);
    assert_eq!(each.iter().filter(|r| is_tenant_mismatch(r)).count(), 6);

    // kms mode: one data key per row, the same tenant check first.
    let a = Audited {
        key: "k-1".into(),
        org: "acme".into(),
        secret: "s3cret".into(),
        amount: Some(5),
    };
    cx.enc.insert(&cx.pool, &a).await.unwrap();
    let sealed: AuditedSealed = query_as(&cx.pool, "SELECT * FROM audited", vec![])
        .await
        .remove(0);
    let copy = AuditedSealed {
        key: sealed.key.clone(),
        org: sealed.org.clone(),
        secret: sealed.secret.clone(),
        amount: sealed.amount.clone(),
        rowseal_header: sealed.rowseal_header.clone(),
    };
    assert!(is_tenant_mismatch(&cx.enc.open(copy, "globex").await));
    assert_eq!(cx.enc.open(sealed, "acme").await.unwrap(), a);
}

/// Two encrypted models from one joined row: each model's columns selected
/// under a prefix, each sealed part read with `from_row_prefixed` and opened.
pub async fn join_of_two_models<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    // What the two sealed types' columns decode as.
    for<'n> &'n str: sqlx::ColumnIndex<DB::Row>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> uuid::Uuid: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
{
    schema::create_table::<Visit, _>(&cx.pool).await.unwrap();
    let p = Patient::new("acme", "Ada Lovelace");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    let visits: Vec<Visit> = (0..3)
        .map(|i| Visit {
            id: i,
            tenant_id: "acme".into(),
            patient_id: p.id,
            reason: format!("reason {i}"),
            name: format!("visit {i}"),
        })
        .collect();
    cx.enc.insert_many(&cx.pool, &visits).await.unwrap();
    // Both tables have `name` and `rowseal_header`: the prefixes keep them apart.
    let sql = format!(
        "SELECT {}, {} FROM visits v JOIN patients p ON p.id = v.patient_id \
         WHERE v.tenant_id = {} ORDER BY v.id",
        Encryptor::select_list_as::<Visit, DB>("v", "v_"),
        Encryptor::select_list_as::<Patient, DB>("p", "p_"),
        placeholder::<DB>(1),
    );
    let rows = DB::fetch_all(&cx.pool, &sql, vec![Value::Text("acme".into())])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for (row, want) in rows.iter().zip(&visits) {
        let v = VisitSealed::from_row_prefixed(row, "v_").unwrap();
        let q = PatientSealed::from_row_prefixed(row, "p_").unwrap();
        assert_eq!(&cx.enc.open(v, "acme").await.unwrap(), want);
        assert_eq!(cx.enc.open(q, "acme").await.unwrap(), p);
    }
    // A prefix that names nothing is sqlx's own error, not a panic.
    assert!(PatientSealed::from_row_prefixed(&rows[0], "x_").is_err());
}

/// Models whose tenant is a UUID column, or an integer column through a
/// newtype: every path (insert, fetch, update, update_fields, lookups, own
/// queries, sealed rows, delete) keys the tenant by its canonical id and
/// refuses another tenant's rows.
pub async fn typed_tenants<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> UuidTenantSealed: sqlx::FromRow<'r, DB::Row>,
{
    schema::create_table::<UuidTenant, _>(&cx.pool)
        .await
        .unwrap();
    schema::create_table::<OrgNote, _>(&cx.pool).await.unwrap();
    let (t1, t2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (s1, s2) = (t1.to_string(), t2.to_string());
    let mut a = UuidTenant::new(1, t1, "ada@example.com");
    let b = UuidTenant::new(2, t2, "ada@example.com");
    cx.enc.insert(&cx.pool, &a).await.unwrap();
    cx.enc.insert(&cx.pool, &b).await.unwrap();

    // The tenant's keys are under its canonical id.
    assert!(cx
        .enc
        .keys()
        .current_tenant_key(&s1)
        .await
        .is_ok_and(|k| k.version() == 1));

    assert_eq!(
        cx.enc
            .fetch::<UuidTenant, _>(&cx.pool, &s1, &1)
            .await
            .unwrap(),
        Some(a.clone())
    );
    // Another tenant's id, or text that is no UUID's canonical form.
    assert_eq!(
        cx.enc
            .fetch::<UuidTenant, _>(&cx.pool, &s2, &1)
            .await
            .unwrap(),
        None
    );
    for bad in ["not-a-uuid", &s1.to_uppercase()] {
        assert!(matches!(
            cx.enc.fetch::<UuidTenant, _>(&cx.pool, bad, &1).await,
            Err(Error::InvalidInput { .. })
        ));
    }
    a.secret = "changed".into();
    cx.enc
        .update_fields(&cx.pool, &a, &["secret"])
        .await
        .unwrap();
    a.email = "ada@lovelace.org".into();
    cx.enc.update(&cx.pool, &a).await.unwrap();
    assert_eq!(
        UuidTenant::find_by_ut_email(&cx.enc, &cx.pool, &s1, "ADA@lovelace.org ")
            .await
            .unwrap(),
        vec![a.clone()]
    );
    assert_eq!(
        UuidTenant::find_by_ut_email(&cx.enc, &cx.pool, &s2, "ada@example.com")
            .await
            .unwrap(),
        vec![b.clone()]
    );

    // Own queries: decrypted rows, and sealed rows by query_as.
    let mut sql = String::from("SELECT ");
    sql.push_str(&Encryptor::select_list::<UuidTenant, DB>());
    sql.push_str(" FROM uuid_tenants WHERE org = ");
    DB::push_placeholder(&mut sql, 1);
    let rows = DB::fetch_all(&cx.pool, &sql, vec![Value::Uuid(t1)])
        .await
        .unwrap();
    let rows: Vec<UuidTenant> = cx.enc.decrypt_all(&s1, &rows).await.unwrap();
    assert_eq!(rows, vec![a.clone()]);
    let rows = DB::fetch_all(&cx.pool, "SELECT * FROM uuid_tenants", vec![])
        .await
        .unwrap();
    let all: Vec<UuidTenant> = cx.enc.decrypt_all(TenantScope::Any, &rows).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(matches!(
        cx.enc.decrypt_all::<UuidTenant, _>(&s1, &rows).await,
        Err(Error::TenantMismatch { .. })
    ));
    let sealed: Vec<UuidTenantSealed> =
        query_as(&cx.pool, "SELECT * FROM uuid_tenants ORDER BY id", vec![]).await;
    let each = cx.enc.open_each(sealed, &s2).await.unwrap();
    assert!(matches!(each[0], Err(Error::TenantMismatch { .. })));
    assert_eq!(each[1].as_ref().unwrap(), &b);

    assert!(!cx
        .enc
        .delete::<UuidTenant, _>(&cx.pool, &s2, &1)
        .await
        .unwrap());
    assert!(cx
        .enc
        .delete::<UuidTenant, _>(&cx.pool, &s1, &1)
        .await
        .unwrap());

    // An integer tenant through a newtype: its id is its decimal form, and
    // its keys are those of the text tenant "42" (one tenant, one id).
    let n = OrgNote {
        id: 7,
        org: OrgId(42),
        body: "quarterly numbers".into(),
    };
    cx.enc.insert(&cx.pool, &n).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<OrgNote, _>(&cx.pool, "42", &7)
            .await
            .unwrap(),
        Some(n.clone())
    );
    assert_eq!(
        cx.enc
            .fetch::<OrgNote, _>(&cx.pool, "43", &7)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        cx.enc.fetch::<OrgNote, _>(&cx.pool, "042", &7).await,
        Err(Error::InvalidInput { .. })
    ));
    let text_tenant = Patient::new("42", "Shares the tenant");
    cx.enc.insert(&cx.pool, &text_tenant).await.unwrap();
    let versions = cx
        .enc
        .keys()
        .store()
        .versions(
            rowseal_core::KeyPurpose::Tenant,
            &rowseal_core::KeyScope::Tenant("42".into()),
        )
        .await
        .unwrap();
    assert_eq!(
        versions.len(),
        1,
        "one tenant key for the text and the integer form"
    );
}
