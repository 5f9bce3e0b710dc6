//! A schema registry entry (`rowseal_schema.definition`) as the `rowseal`
//! tool reads it, through rowseal-sqlx's typed `TableSchema`. The registry is
//! written by whoever can write the database, so the tool treats it as
//! untrusted input:
//! - arbitrary bytes never panic: an entry is a typed `TableSchema`, or a
//!   typed error (`Schema`, or `UnsupportedRegistryFormat` for another format
//!   number) that names the table it was read for;
//! - an entry that reads is written back and reads again to an equal value
//!   (one meaning per entry), and its derived parts are consistent: every
//!   covered column is a field, both slots of every index are distinct by
//!   parity, and the primary-key rule never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rowseal_sqlx::schema::{IndexSlot, TableSchema};
use rowseal_sqlx::{Error, Value};

const TABLE: &str = "fuzzed_table";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match TableSchema::from_registry_json(TABLE, text) {
        Ok(schema) => {
            let again = TableSchema::from_registry_json(TABLE, &schema.to_registry_json())
                .expect("an entry that read must read again once written");
            assert_eq!(again, schema, "an entry with two meanings");
            for idx in &schema.blind_indexes {
                for c in &idx.columns {
                    assert!(schema.field_by_column(c).is_some());
                }
                for v in 0..4u32 {
                    let (slot, _, _) = idx.slots()[usize::from(v % 2 == 0)];
                    assert!(slot.holds(v));
                    assert_eq!(IndexSlot::of(v), slot);
                }
            }
            let _ = schema.spec();
            let _ = schema.primary_key_bytes(&Value::I64(7));
            let _ = schema.encrypted_columns();
        }
        Err(Error::Schema { table, .. } | Error::UnsupportedRegistryFormat { table, .. }) => {
            assert_eq!(table, TABLE);
        }
        Err(other) => panic!("an untyped registry error: {other:?}"),
    }
});
