//! Schema: rowseal's own tables ([`install`]), the DDL of a model's table
//! ([`create_table_sql`], [`create_table`]) and the schema registry
//! ([`register`], [`registered`], [`registered_tables`]), which lets the
//! command-line tool work on a table without the application's code. The
//! registry's content is the typed [`TableSchema`] (built from a model with
//! [`definition`] or `TableSchema::from(model)`), the one description of a
//! table both the library and the tool read.
//!
//! A model's table has its plain columns with their natural types, one bytes
//! column per encrypted field (`BYTEA` / `BLOB` / `LONGBLOB`) holding the field
//! envelope, `rowseal_header` (the row's key header) and
//! `rowseal_key_version` (the tenant-key version, 0 in `kms` mode), with an
//! index on (tenant, `rowseal_key_version`) so that rotation finds the rows not
//! yet on a version without decrypting anything.

mod table;

pub use crate::layout::{IndexScope, IndexSlot};
pub use table::{FieldSchema, IndexSchema, TableSchema, REGISTRY_FORMAT};

use crate::backend::{Backend, DbRow};
use crate::error::{Error, Result};
use crate::model::{Encrypted, FieldDef, Model, HEADER_COLUMN, KEY_VERSION_COLUMN};
use crate::value::{SqlType, Value};

/// Creates rowseal's own tables (`rowseal_keys`, `rowseal_schema`,
/// `rowseal_jobs`), or upgrades them to this version: the same as
/// [`migrate::run`](crate::migrate::run), whose migrations it runs and
/// records in `rowseal_migrations` (one path to rowseal's tables, so a
/// database set up with `install` upgrades like any other).
pub async fn install<'a, A>(conn: A) -> Result<()>
where
    A: sqlx::Acquire<'a>,
    A::Database: Backend,
{
    crate::migrate::run(conn).await.map(drop)
}

/// The statements that create `T`'s table, its key-version index and one
/// index per blind-index slot, for `DB` (idempotent: `IF NOT EXISTS`). On
/// PostgreSQL and SQLite a slot's index is partial (`WHERE <value column>
/// IS NOT NULL`): a slot is NULL in most rows outside an index-key rotation.
/// An existing index is left as it is, full or partial (see
/// `docs/blind-indexes.md` to swap one).
pub fn create_table_sql<T: Encrypted, DB: Backend>() -> Vec<String> {
    model_ddl::<DB>(T::model())
}

fn model_ddl<DB: Backend>(model: &Model) -> Vec<String> {
    let mysql = DB::DIALECT == "mysql";
    let mut sql = String::from("CREATE TABLE IF NOT EXISTS ");
    DB::push_ident(&mut sql, model.table());
    sql.push_str(" (\n");
    for (i, f) in model.fields.iter().enumerate() {
        let keyed = i == model.primary_key || i == model.tenant;
        sql.push_str("    ");
        DB::push_ident(&mut sql, f.column);
        sql.push(' ');
        sql.push_str(
            f.ddl_type
                .unwrap_or_else(|| DB::column_type(f.sql_type, keyed)),
        );
        if !f.nullable {
            sql.push_str(" NOT NULL");
        }
        if f.generated {
            push_generated::<DB>(&mut sql, f, i == model.primary_key);
        }
        if i == model.primary_key && !model.tenant_in_primary_key {
            sql.push_str(" PRIMARY KEY");
        }
        sql.push_str(",\n");
    }

    // Legacy plaintext columns (fields declared with `plaintext_column`):
    // nullable, and never filled in a table rowseal created (a fresh
    // database of an application still migrating its production table).
    for (c, t) in model.fields.iter().filter_map(|f| f.plaintext_column) {
        sql.push_str("    ");
        DB::push_ident(&mut sql, c);
        sql.push(' ');
        sql.push_str(DB::column_type(t, false));
        sql.push_str(",\n");
    }
    sql.push_str("    ");
    DB::push_ident(&mut sql, HEADER_COLUMN);
    sql.push(' ');
    // ~71 bytes in derived mode; up to a few hundred with a KMS-wrapped
    // per-row data key.
    sql.push_str(if mysql {
        "VARBINARY(1024)"
    } else {
        DB::column_type(SqlType::Bytes, false)
    });
    sql.push_str(" NOT NULL,\n    ");
    DB::push_ident(&mut sql, KEY_VERSION_COLUMN);
    sql.push(' ');
    sql.push_str(DB::column_type(SqlType::I64, false));
    sql.push_str(" NOT NULL");
    // Blind indexes: per slot, value (BIGINT up to 64 bits, bytes above) and
    // version; a database index on each value column (partial where the
    // database has partial indexes, see `push_slot_predicate`).
    let mut index_ddl: Vec<(String, bool, String, &str)> = Vec::new();
    for def in model.indexes {
        for (value, version, name) in [
            (
                def.column,
                def.version_column,
                def.db_index_name(model.table()),
            ),
            (
                def.alt_column,
                def.alt_version_column,
                def.db_alt_index_name(model.table()),
            ),
        ] {
            sql.push_str(",\n    ");
            DB::push_ident(&mut sql, value);
            sql.push(' ');
            sql.push_str(if def.bits <= 64 {
                DB::column_type(SqlType::I64, false)
            } else {
                DB::column_type(SqlType::Bytes, true)
            });
            sql.push_str(",\n    ");
            DB::push_ident(&mut sql, version);
            sql.push(' ');
            sql.push_str(DB::column_type(SqlType::I64, false));
            let mut cols = String::new();
            if !def.global {
                DB::push_ident(&mut cols, model.tenant_field().column);
                cols.push_str(", ");
            }
            DB::push_ident(&mut cols, value);
            index_ddl.push((name, def.unique, cols, value));
        }
    }
    // A table constraint comes after every column (SQLite requires it).
    if model.tenant_in_primary_key {
        sql.push_str(",\n    PRIMARY KEY (");
        DB::push_ident(&mut sql, model.tenant_field().column);
        sql.push_str(", ");
        DB::push_ident(&mut sql, model.primary_key_field().column);
        sql.push(')');
    }
    let index = format!("{}_rowseal_kv", model.table());
    let mut cols = String::new();
    DB::push_ident(&mut cols, model.tenant_field().column);
    cols.push_str(", ");
    DB::push_ident(&mut cols, KEY_VERSION_COLUMN);
    if mysql {
        // MySQL has no CREATE INDEX IF NOT EXISTS; declare it with the table.
        sql.push_str(",\n    INDEX ");
        DB::push_ident(&mut sql, &index);
        sql.push_str(&format!(" ({cols})"));
        for (name, unique, cols, _) in &index_ddl {
            sql.push_str(if *unique {
                ",\n    UNIQUE INDEX "
            } else {
                ",\n    INDEX "
            });
            DB::push_ident(&mut sql, name);
            sql.push_str(&format!(" ({cols})"));
        }
        sql.push_str("\n)");
        return vec![sql];
    }
    sql.push_str("\n)");
    let mut idx = String::from("CREATE INDEX IF NOT EXISTS ");
    DB::push_ident(&mut idx, &index);
    idx.push_str(" ON ");
    DB::push_ident(&mut idx, model.table());
    idx.push_str(&format!(" ({cols})"));
    let mut out = vec![sql, idx];
    for (name, unique, cols, value) in index_ddl {
        let mut idx = String::from(if unique {
            "CREATE UNIQUE INDEX IF NOT EXISTS "
        } else {
            "CREATE INDEX IF NOT EXISTS "
        });
        DB::push_ident(&mut idx, &name);
        idx.push_str(" ON ");
        DB::push_ident(&mut idx, model.table());
        idx.push_str(&format!(" ({cols})"));
        push_slot_predicate::<DB>(&mut idx, value);
        out.push(idx);
    }
    out
}

/// Appends ` WHERE <value> IS NOT NULL` to a blind-index slot's database
/// index, on the databases that have partial indexes (PostgreSQL, SQLite).
///
/// Either slot is NULL in most rows most of the time: the slot of the
/// version not in use is NULL outside a rotation, and which slot that is
/// alternates with every rotation (odd versions in the main slot, even ones
/// in the alternate, [`IndexSlot`]; `rowseal reindex` clears the retired
/// slot); a NULL field, or a row written before the index existed, has NULL
/// in both. A lookup only ever matches `<value> = ?` or `<value> IN (...)`,
/// which the planners of both databases know implies `IS NOT NULL`, so the
/// partial index serves every lookup while a write of a NULL slot costs no
/// index entry. Uniqueness is unchanged: NULLs never conflicted.
///
/// MySQL/MariaDB have no partial index (nor an index that leaves out NULL
/// keys: InnoDB stores them like any other), so there the index stays full.
fn push_slot_predicate<DB: Backend>(sql: &mut String, value: &str) {
    if DB::DIALECT == "mysql" {
        return;
    }
    sql.push_str(" WHERE ");
    DB::push_ident(sql, value);
    sql.push_str(" IS NOT NULL");
}

/// How the database fills a generated column: its `default_sql`; else an
/// identity for an integer primary key (SQLite: an `INTEGER PRIMARY KEY` is
/// already the rowid) and the current time for a timestamp; else nothing
/// (the column's default is the application's DDL).
fn push_generated<DB: Backend>(sql: &mut String, f: &FieldDef, primary_key: bool) {
    let integer = matches!(f.sql_type, SqlType::I16 | SqlType::I32 | SqlType::I64);
    let instant = matches!(
        f.sql_type,
        SqlType::DateTime | SqlType::Timestamptz | SqlType::TimeDateTime | SqlType::TimeTimestamptz
    );
    match (f.default_sql, DB::DIALECT) {
        (Some(expr), _) => {
            sql.push_str(" DEFAULT ");
            sql.push_str(expr);
        }
        (None, "postgres") if primary_key && integer => {
            sql.push_str(" GENERATED BY DEFAULT AS IDENTITY");
        }
        (None, "mysql") if primary_key && integer => sql.push_str(" AUTO_INCREMENT"),
        // DATETIME(6): the default must have the column's precision.
        (None, "mysql") if instant => sql.push_str(" DEFAULT CURRENT_TIMESTAMP(6)"),
        (None, _) if instant => sql.push_str(" DEFAULT CURRENT_TIMESTAMP"),
        (None, _) => {}
    }
}

/// Creates `T`'s table and index if they do not exist.
pub async fn create_table<'a, T, A>(conn: A) -> Result<()>
where
    T: Encrypted,
    A: sqlx::Acquire<'a>,
    A::Database: Backend,
{
    let mut conn = conn.acquire().await?;
    for stmt in create_table_sql::<T, A::Database>() {
        <A::Database as Backend>::execute_on(&mut conn, &stmt, Vec::new()).await?;
    }
    Ok(())
}

/// The statements that adopt an existing table of plaintext rows for `T`,
/// for `DB`: `ALTER TABLE … ADD COLUMN` for each encrypted field's column,
/// `rowseal_header`, `rowseal_key_version` and each blind index's value and
/// version columns (both slots) — all nullable, so that the existing rows stay valid —
/// then the key-version and blind indexes (the latter partial on PostgreSQL
/// and SQLite, as in [`create_table_sql`]).
///
/// Each field marked `#[rowseal(encrypt, plaintext_column = "...")]` keeps
/// its legacy plaintext column: reads fall back to it while the ciphertext
/// is NULL, writes set it to NULL, and `rowseal encrypt-column` moves the
/// remaining values into the ciphertext columns. Writes need the legacy
/// column to accept NULL: on PostgreSQL a `DROP NOT NULL` is included; on
/// MySQL/MariaDB a `MODIFY COLUMN … NULL` that restates the column with
/// rowseal's type for the field (review it against your column's type
/// first); SQLite cannot relax a constraint in place, so there the legacy
/// column must already be nullable.
///
/// Not idempotent: run it once, as a migration (it is not part of
/// [`create_table_sql`], which creates a new table).
pub fn adopt_table_sql<T: Encrypted, DB: Backend>() -> Vec<String> {
    let model = T::model();
    let mysql = DB::DIALECT == "mysql";
    let table = {
        let mut t = String::new();
        DB::push_ident(&mut t, model.table());
        t
    };
    let mut out = Vec::new();
    let mut add = |column: &str, ty: &str| {
        let mut sql = format!("ALTER TABLE {table} ADD COLUMN ");
        DB::push_ident(&mut sql, column);
        sql.push(' ');
        sql.push_str(ty);
        out.push(sql);
    };
    for f in model.fields.iter().filter(|f| f.is_encrypted()) {
        add(f.column, DB::column_type(SqlType::Bytes, false));
    }
    add(
        HEADER_COLUMN,
        if mysql {
            "VARBINARY(1024)"
        } else {
            DB::column_type(SqlType::Bytes, false)
        },
    );
    add(KEY_VERSION_COLUMN, DB::column_type(SqlType::I64, false));
    for def in model.indexes {
        for (value, version) in [
            (def.column, def.version_column),
            (def.alt_column, def.alt_version_column),
        ] {
            add(
                value,
                if def.bits <= 64 {
                    DB::column_type(SqlType::I64, false)
                } else {
                    DB::column_type(SqlType::Bytes, true)
                },
            );
            add(version, DB::column_type(SqlType::I64, false));
        }
    }
    for f in model.fields {
        let Some((legacy, ty)) = f.plaintext_column else {
            continue;
        };
        let mut sql = format!("ALTER TABLE {table} ");
        match DB::DIALECT {
            "postgres" => {
                sql.push_str("ALTER COLUMN ");
                DB::push_ident(&mut sql, legacy);
                sql.push_str(" DROP NOT NULL");
            }
            "mysql" => {
                sql.push_str("MODIFY COLUMN ");
                DB::push_ident(&mut sql, legacy);
                sql.push(' ');
                sql.push_str(DB::column_type(ty, true));
                sql.push_str(" NULL");
            }
            _ => continue,
        }
        out.push(sql);
    }
    let mut index = |name: String, unique: bool, global: bool, column: &str, slot: bool| {
        let mut sql = String::from(if unique {
            "CREATE UNIQUE INDEX "
        } else {
            "CREATE INDEX "
        });
        if !mysql {
            sql.push_str("IF NOT EXISTS ");
        }
        DB::push_ident(&mut sql, &name);
        sql.push_str(&format!(" ON {table} ("));
        if !global {
            DB::push_ident(&mut sql, model.tenant_field().column);
            sql.push_str(", ");
        }
        DB::push_ident(&mut sql, column);
        sql.push(')');
        if slot {
            push_slot_predicate::<DB>(&mut sql, column);
        }
        out.push(sql);
    };
    // Not partial: the key version is NULL only in rows not encrypted yet,
    // until `rowseal encrypt-column` fills them; once adopted, every row
    // has one.
    index(
        format!("{}_rowseal_kv", model.table()),
        false,
        false,
        KEY_VERSION_COLUMN,
        false,
    );
    for def in model.indexes {
        index(
            def.db_index_name(model.table()),
            def.unique,
            def.global,
            def.column,
            true,
        );
        index(
            def.db_alt_index_name(model.table()),
            def.unique,
            def.global,
            def.alt_column,
            true,
        );
    }
    out
}

/// Runs [`adopt_table_sql`] (once: the columns must not exist yet).
pub async fn adopt_table<'a, T, A>(conn: A) -> Result<()>
where
    T: Encrypted,
    A: sqlx::Acquire<'a>,
    A::Database: Backend,
{
    let mut conn = conn.acquire().await?;
    for stmt in adopt_table_sql::<T, A::Database>() {
        <A::Database as Backend>::execute_on(&mut conn, &stmt, Vec::new()).await?;
    }
    Ok(())
}

/// The registry's description of a model (what [`register`] stores).
pub fn definition(model: &Model) -> TableSchema {
    TableSchema::from(model)
}

/// Records (or refreshes) `T` in the schema registry table `rowseal_schema`.
pub async fn register<'c, T, E>(executor: E) -> Result<()>
where
    T: Encrypted,
    E: sqlx::Executor<'c>,
    E::Database: Backend,
{
    let model = T::model();
    let mut sql = String::from(
        "INSERT INTO rowseal_schema (table_name, record_type, tenant_column, primary_key_column, key_mode, bind_primary_key, definition) VALUES (",
    );
    for i in 1..=7 {
        if i > 1 {
            sql.push_str(", ");
        }
        E::Database::push_placeholder(&mut sql, i);
    }
    sql.push(')');
    let cols = [
        "record_type",
        "tenant_column",
        "primary_key_column",
        "key_mode",
        "bind_primary_key",
        "definition",
    ];
    if <E::Database as Backend>::DIALECT == "mysql" {
        sql.push_str(" ON DUPLICATE KEY UPDATE ");
        let sets: Vec<String> = cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
        sql.push_str(&sets.join(", "));
    } else {
        sql.push_str(" ON CONFLICT (table_name) DO UPDATE SET ");
        let sets: Vec<String> = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
        sql.push_str(&sets.join(", "));
    }
    let values = vec![
        Value::Text(model.table().to_owned()),
        Value::Text(model.spec.record_type().to_owned()),
        Value::Text(model.tenant_field().column.to_owned()),
        Value::Text(model.primary_key_field().column.to_owned()),
        Value::Text(model.spec.key_mode().as_str().to_owned()),
        Value::Bool(model.spec.binds_primary_key()),
        Value::Text(definition(model).to_registry_json()),
    ];
    <E::Database as Backend>::execute(executor, &sql, values).await?;
    Ok(())
}

/// The registry entry of `table`, or `None` if the table is not registered.
/// An entry written in another registry format is
/// [`Error::UnsupportedRegistryFormat`].
pub async fn registered<'c, E>(executor: E, table: &str) -> Result<Option<TableSchema>>
where
    E: sqlx::Executor<'c>,
    E::Database: Backend,
{
    let mut sql =
        String::from("SELECT table_name, definition FROM rowseal_schema WHERE table_name = ");
    E::Database::push_placeholder(&mut sql, 1);
    let row = <E::Database as Backend>::fetch_optional(
        executor,
        &sql,
        vec![Value::Text(table.to_owned())],
    )
    .await?;
    row.as_ref().map(entry).transpose()
}

/// Every registry entry, sorted by table name.
pub async fn registered_tables<DB: Backend>(conn: &mut DB::Connection) -> Result<Vec<TableSchema>> {
    let rows = DB::__fetch_all_on(
        conn,
        "SELECT table_name, definition FROM rowseal_schema ORDER BY table_name",
        Vec::new(),
    )
    .await?;
    rows.iter().map(entry).collect()
}

/// A `(table_name, definition)` row of `rowseal_schema`.
fn entry<R: DbRow>(row: &R) -> Result<TableSchema> {
    let text = |i: usize, column: &str| {
        row.read_str(i).map_err(|e| Error::Schema {
            table: "rowseal_schema".into(),
            column: column.into(),
            reason: e.to_string(),
        })
    };
    let table = text(0, "table_name")?;
    TableSchema::from_registry_json(table, text(1, "definition")?)
}
