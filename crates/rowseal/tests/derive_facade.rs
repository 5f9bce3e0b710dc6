#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `#[derive(Encrypted)]` through the facade (default features: sqlite + derive).

#![cfg(all(feature = "derive", feature = "sqlite"))]

use rowseal::Encrypted;

#[derive(Encrypted)]
#[rowseal(table = "notes", record_type = "note", tenant = tenant, primary_key = id, bind_primary_key)]
struct Note {
    id: i64,
    tenant: String,
    #[rowseal(encrypt)]
    body: String,
}

#[test]
fn derive_through_the_facade() {
    let model = <Note as rowseal::ReadModel>::model();
    assert_eq!(model.table(), "notes");
    assert!(model.spec.binds_primary_key());
    let ddl = rowseal::schema::create_table_sql::<Note, rowseal::sqlx::Sqlite>();
    assert!(ddl[0].contains("`body` BLOB NOT NULL"), "{ddl:?}");
    assert!(ddl[1].contains("notes_rowseal_kv"), "{ddl:?}");
    let _ = Note {
        id: 1,
        tenant: "t".into(),
        body: String::new(),
    };
}
