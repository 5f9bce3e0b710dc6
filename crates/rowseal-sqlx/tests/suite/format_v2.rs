//! Format 2 on every database: which encrypted fields are present is bound
//! into the row key, every write re-keys the row (so no ciphertext of an
//! earlier write can be mixed in), logical names survive renames, format 1
//! rows still read and move to format 2 on their next write, and the stored
//! size per row.

use rowseal_sqlx::{schema, Backend, DbRow, Encryptor, Error, SqlType, Value};

use super::models::{BeforeRename, Patient, Renamed, Triple};
use super::{raw_get, raw_set, Ctx};

/// The core error under a `Decrypt` error of the header column.
fn header_failure(e: &Error) -> &rowseal_core::Error {
    match e {
        Error::Field { column, source, .. } if column == "rowseal_header" => source,
        other => panic!("expected a key-header failure, got {other:?}"),
    }
}

async fn set_null<DB: Backend>(pool: &sqlx::Pool<DB>, column: &str, id: uuid::Uuid)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from("UPDATE patients SET ");
    DB::push_ident(&mut sql, column);
    sql.push_str(" = NULL WHERE id = ");
    DB::push_placeholder(&mut sql, 1);
    assert_eq!(
        DB::execute(pool, &sql, vec![Value::Uuid(id)])
            .await
            .unwrap(),
        1
    );
}

async fn fetch_patient<DB: Backend>(
    cx: &Ctx<DB>,
    id: uuid::Uuid,
) -> rowseal_sqlx::Result<Option<Patient>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    cx.enc.fetch::<Patient, _>(&cx.pool, "acme", &id).await
}

/// Finding 4 of the v1 review: a ciphertext NULLed, a NULL one filled, or
/// one from an earlier write of the row put back, each fails with a typed
/// error; `update_fields` re-seals the whole row under a fresh key.
pub async fn presence_and_mixing_refused<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let get = |col: &'static str, id: uuid::Uuid| {
        raw_get(&cx.pool, "patients", col, "id", Value::Uuid(id))
    };
    let set = |col: &'static str, id: uuid::Uuid, bytes: Vec<u8>| {
        raw_set(&cx.pool, "patients", col, "id", Value::Uuid(id), bytes)
    };
    let fetch = |id: uuid::Uuid| fetch_patient(cx, id);

    let p = Patient::new("acme", "Ada Lovelace");
    cx.enc.insert(&cx.pool, &p).await.unwrap();
    let header = get("rowseal_header", p.id).await;
    assert_eq!(header[0], 2, "new rows are format 2");
    assert_eq!(header.len(), 56, "derived-mode format 2 header");

    // NULLed: the header counts three present fields, the row has two.
    let notes = get("notes", p.id).await;
    set_null(&cx.pool, "notes", p.id).await;
    let e = fetch(p.id).await.unwrap_err();
    assert!(
        matches!(
            header_failure(&e),
            rowseal_core::Error::FieldPresence {
                stored: 3,
                found: 2
            }
        ),
        "NULLed: {e}"
    );
    set("notes", p.id, notes.clone()).await;
    assert_eq!(fetch(p.id).await.unwrap().unwrap(), p);

    // Filled: a row without notes gets a ciphertext (another of its own
    // fields, or another row's notes).
    let mut q = Patient::new("acme", "Grace Hopper");
    q.notes = None;
    cx.enc.insert(&cx.pool, &q).await.unwrap();
    for filler in [get("name", q.id).await, notes.clone()] {
        set("notes", q.id, filler).await;
        let e = fetch(q.id).await.unwrap_err();
        assert!(
            matches!(
                header_failure(&e),
                rowseal_core::Error::FieldPresence {
                    stored: 2,
                    found: 3
                }
            ),
            "filled: {e}"
        );
    }
    set_null(&cx.pool, "notes", q.id).await;
    assert_eq!(fetch(q.id).await.unwrap().unwrap(), q);

    // Swapping two present fields of a row, or names that differ only in
    // which field is present (same count), fails to open too.
    let (name, dob) = (get("name", p.id).await, get("dob", p.id).await);
    set("name", p.id, dob.clone()).await;
    set("dob", p.id, name.clone()).await;
    assert!(fetch(p.id).await.unwrap_err().is_decrypt());
    set("name", p.id, name.clone()).await;
    set("dob", p.id, dob.clone()).await;
    let mut r = Patient::new("acme", "Alan Turing");
    r.birth_date = None;
    cx.enc.insert(&cx.pool, &r).await.unwrap();
    let r_notes = get("notes", r.id).await;
    set_null(&cx.pool, "notes", r.id).await;
    set("dob", r.id, r_notes).await;
    let e = fetch(r.id).await.unwrap_err();
    assert!(
        matches!(header_failure(&e), rowseal_core::Error::Decrypt),
        "same count, other names: {e}"
    );

    // An earlier write's ciphertext: update_fields re-keys the row, so the
    // old `name` no longer opens beside the new header, and the other
    // fields were re-sealed (their old ciphertexts fail too).
    let old_header = get("rowseal_header", p.id).await;
    let mut renamed = p.clone();
    renamed.name = "Ada King".into();
    cx.enc
        .update_fields(&cx.pool, &renamed, &["name"])
        .await
        .unwrap();
    assert_eq!(fetch(p.id).await.unwrap().unwrap(), renamed);
    let new_header = get("rowseal_header", p.id).await;
    assert_ne!(new_header, old_header, "update_fields re-keys the row");
    assert_ne!(get("notes", p.id).await, notes, "every field re-sealed");
    let mut latest = Vec::new();
    for c in ["rowseal_header", "name", "dob", "notes"] {
        latest.push((c, get(c, p.id).await));
    }
    set("name", p.id, name.clone()).await;
    let e = fetch(p.id).await.unwrap_err();
    assert!(e.is_decrypt(), "old name beside the new header: {e}");
    set("rowseal_header", p.id, old_header.clone()).await;
    assert!(
        fetch(p.id).await.unwrap_err().is_decrypt(),
        "old header and name beside re-sealed fields"
    );
    // What remains possible (docs/threat-model.md): replaying a whole
    // earlier version of the row, every column as it was.
    set("notes", p.id, notes).await;
    set("dob", p.id, dob).await;
    assert_eq!(fetch(p.id).await.unwrap().unwrap(), p, "whole-row replay");
    // Back to the latest version, then a plain field alone: no re-key.
    for (col, v) in latest {
        set(col, p.id, v).await;
    }
    assert_eq!(fetch(p.id).await.unwrap().unwrap(), renamed);
    let reseal_cols = ["rowseal_header", "dob", "notes"];
    let mut before = Vec::new();
    for c in reseal_cols {
        before.push(get(c, p.id).await);
    }
    let mut visited = renamed.clone();
    visited.visits += 1;
    cx.enc
        .update_fields(&cx.pool, &visited, &["visits"])
        .await
        .unwrap();
    for (c, b) in reseal_cols.iter().zip(&before) {
        assert_eq!(&get(c, p.id).await, b, "{c} untouched by a plain update");
    }
    assert_eq!(fetch(p.id).await.unwrap().unwrap(), visited);
    // Setting a field to None through update_fields is a write like any
    // other: the header now counts two fields.
    let mut cleared = visited.clone();
    cleared.notes = None;
    cx.enc
        .update_fields(&cx.pool, &cleared, &["notes"])
        .await
        .unwrap();
    assert_eq!(fetch(p.id).await.unwrap().unwrap(), cleared);
}

/// Finding 5 of the v1 review: renaming the struct, the table, an encrypted
/// column and the Rust field keeps every old row readable (and its blind
/// index usable) once the model names the new physical names.
pub async fn renames_keep_rows_readable<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    schema::create_table::<BeforeRename, _>(&cx.pool)
        .await
        .unwrap();
    let rows: Vec<BeforeRename> = (1..=20)
        .map(|id| BeforeRename {
            id,
            tenant_id: format!("t{}", id % 3),
            phone: format!("+44 20 7946 {id:04}"),
            note: (id % 2 == 0).then(|| format!("note {id}")),
        })
        .collect();
    cx.enc.insert_many(&cx.pool, &rows[..10]).await.unwrap();
    // Half of them written by a format 1 writer, which bound the table and
    // column: such rows are not rename-safe (docs/format.md), and are
    // moved to format 2 (here by a write; `rowseal rotate` for a table)
    // before the rename.
    let v1 = cx.enc.clone().__writing_format_1();
    v1.insert_many(&cx.pool, &rows[10..]).await.unwrap();
    for r in &rows[10..] {
        cx.enc.update(&cx.pool, r).await.unwrap();
    }
    // One format 1 row left behind: the v1 behaviour the rename breaks.
    let left_behind = BeforeRename {
        id: 99,
        tenant_id: "t9".into(),
        phone: "+44 20 7946 0099".into(),
        note: None,
    };
    v1.insert(&cx.pool, &left_behind).await.unwrap();

    let ident = |name: &str| {
        let mut quoted = String::new();
        DB::push_ident(&mut quoted, name);
        quoted
    };
    let (before, after) = (ident("rn_before"), ident("rn_after"));
    for ddl in [
        format!("ALTER TABLE {before} RENAME TO {after}"),
        format!(
            "ALTER TABLE {after} RENAME COLUMN {} TO {}",
            ident("phone"),
            ident("phone_enc")
        ),
    ] {
        DB::execute(&cx.pool, &ddl, vec![]).await.unwrap();
    }

    // Finding 5 reproduced on the format 1 row: its ciphertexts bound the
    // old table and column names, and no longer open.
    let e = cx
        .enc
        .fetch::<Renamed, _>(&cx.pool, "t9", &99)
        .await
        .unwrap_err();
    assert!(e.is_decrypt(), "a format 1 row after a rename: {e}");
    let sql = format!(
        "SELECT {} FROM rn_after WHERE id < 99 ORDER BY id",
        Encryptor::select_list::<Renamed, DB>()
    );
    let read: Vec<Renamed> = cx
        .enc
        .fetch_all(rowseal_sqlx::TenantScope::Any, sqlx::query(&sql), &cx.pool)
        .await
        .unwrap();
    assert_eq!(read.len(), rows.len());
    for (r, b) in read.iter().zip(&rows) {
        assert_eq!(
            (r.id, &r.tenant_id, &r.telephone, &r.note),
            (b.id, &b.tenant_id, &b.phone, &b.note)
        );
    }
    // Blind-index keys derive from the record type and index name: the
    // stored index values still match.
    let found = Renamed::find_by_phone(&cx.enc, &cx.pool, "t1", "+44 (20) 7946-0004")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, 4);
    // And rows write and read under the new names.
    let mut w = read[0].clone();
    w.telephone = "+1 555 0100".into();
    cx.enc.update(&cx.pool, &w).await.unwrap();
    assert_eq!(
        cx.enc
            .fetch::<Renamed, _>(&cx.pool, &w.tenant_id, &w.id)
            .await
            .unwrap()
            .unwrap(),
        w
    );
    DB::execute(&cx.pool, "DROP TABLE rn_after", vec![])
        .await
        .unwrap();
}

/// Rows of a format 1 writer still read, on every path, and move to format
/// 2 on their next write.
pub async fn format_1_rows_read_and_upgrade<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let get = |col: &'static str, id: uuid::Uuid| {
        raw_get(&cx.pool, "patients", col, "id", Value::Uuid(id))
    };
    let v1 = cx.enc.clone().__writing_format_1();
    let mut rows: Vec<Patient> = (0..6)
        .map(|i| Patient::new("acme", &format!("person {i}")))
        .collect();
    rows[1].notes = None;
    rows[2].birth_date = None;
    v1.insert_many(&cx.pool, &rows).await.unwrap();
    for r in &rows {
        assert_eq!(get("rowseal_header", r.id).await[0], 1);
        assert_eq!(
            cx.enc
                .fetch::<Patient, _>(&cx.pool, "acme", &r.id)
                .await
                .unwrap()
                .as_ref(),
            Some(r)
        );
    }
    let sql = format!(
        "SELECT {} FROM patients",
        Encryptor::select_list::<Patient, DB>()
    );
    let mut all: Vec<Patient> = cx
        .enc
        .fetch_all("acme", sqlx::query(&sql), &cx.pool)
        .await
        .unwrap();
    all.sort_by_key(|p| p.name.clone());
    assert_eq!(all, rows);
    // update_fields on a format 1 row re-seals it whole as format 2; update
    // too.
    let mut a = rows[0].clone();
    a.notes = Some("changed".into());
    cx.enc
        .update_fields(&cx.pool, &a, &["notes"])
        .await
        .unwrap();
    let mut b = rows[1].clone();
    b.visits = 99;
    cx.enc.update(&cx.pool, &b).await.unwrap();
    for (r, changed) in rows.iter().zip(
        [Some(&a), Some(&b)]
            .into_iter()
            .chain(std::iter::repeat(None)),
    ) {
        let want = changed.unwrap_or(r);
        let format = if changed.is_some() { 2 } else { 1 };
        assert_eq!(get("rowseal_header", r.id).await[0], format);
        assert_eq!(
            cx.enc
                .fetch::<Patient, _>(&cx.pool, "acme", &r.id)
                .await
                .unwrap()
                .as_ref(),
            Some(want)
        );
    }
    // A format 1 row has no presence binding: NULLing one of its fields
    // reads as NULL (what format 2 closes; `rowseal rotate` moves old rows).
    set_null(&cx.pool, "notes", rows[3].id).await;
    let read = cx
        .enc
        .fetch::<Patient, _>(&cx.pool, "acme", &rows[3].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.notes, None);
}

/// Stored bytes per row, three encrypted fields of 31 bytes, derived mode:
/// key header plus the three envelopes, as the database counts them.
pub async fn stored_bytes_per_row<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    schema::create_table::<Triple, _>(&cx.pool).await.unwrap();
    let value = "x".repeat(31);
    let row = |id| Triple {
        id,
        tenant_id: "acme".into(),
        a: value.clone(),
        b: value.clone(),
        c: value.clone(),
    };
    cx.enc
        .clone()
        .__writing_format_1()
        .insert(&cx.pool, &row(1))
        .await
        .unwrap();
    cx.enc.insert(&cx.pool, &row(2)).await.unwrap();
    let (len, int) = match DB::DIALECT {
        "sqlite" => ("LENGTH", "INTEGER"),
        "mysql" => ("OCTET_LENGTH", "SIGNED"),
        _ => ("OCTET_LENGTH", "BIGINT"),
    };
    let sql = format!(
        "SELECT id, CAST({len}(rowseal_header) AS {int}), CAST({len}(a) + {len}(b) + {len}(c) AS {int}) FROM triples ORDER BY id"
    );
    let found = DB::fetch_all(&cx.pool, &sql, vec![]).await.unwrap();
    let int = |r: &DB::Row, i| match r.read_value(i, SqlType::I64).unwrap() {
        Value::I64(n) => n,
        other => panic!("{other:?}"),
    };
    let sizes: Vec<(i64, i64)> = found.iter().map(|r| (int(r, 1), int(r, 2))).collect();
    eprintln!(
        "[{}] stored bytes per row (3 x 31-byte text, derived): format 1 header {} + fields {} = {}; format 2 header {} + fields {} = {}",
        DB::DIALECT,
        sizes[0].0,
        sizes[0].1,
        sizes[0].0 + sizes[0].1,
        sizes[1].0,
        sizes[1].1,
        sizes[1].0 + sizes[1].1
    );
    // Format 1: 71-byte header; per field 1 + 12 + 16 envelope bytes and a
    // 2-byte encoding header. Format 2: 56-byte header; per field a 16-byte
    // tag and a 1-byte type tag (value + 17).
    assert_eq!(sizes[0], (71, 3 * (31 + 2 + 29)));
    assert_eq!(sizes[1], (56, 3 * (31 + 17)));
    DB::execute(&cx.pool, "DROP TABLE triples", vec![])
        .await
        .unwrap();
}
