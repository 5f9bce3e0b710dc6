//! Query plans, for tests that assert that the statements rowseal runs use
//! the indexes it creates (so that a change that loses an index fails).

use rowseal_sqlx::{Backend, DbRow, SqlType, Value};

/// The plan of `sql` with `binds`, one line per plan node: PostgreSQL's
/// text lines, SQLite's `detail`s (`EXPLAIN QUERY PLAN`), MariaDB's rows as
/// `table=… type=… key=…`.
pub async fn plan<DB: Backend>(
    conn: &mut DB::Connection,
    sql: &str,
    binds: Vec<Value>,
) -> Vec<String> {
    let prefix = match DB::DIALECT {
        "sqlite" => "EXPLAIN QUERY PLAN ",
        _ => "EXPLAIN ",
    };
    let rows = DB::__fetch_all_on(conn, &format!("{prefix}{sql}"), binds)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    let text = |row: &DB::Row, name: &str| {
        let i = row
            .column_index(name)
            .unwrap_or_else(|| panic!("no column {name} in the plan"));
        match row.read_value(i, SqlType::Text).unwrap() {
            Value::Text(s) => s,
            _ => "NULL".to_owned(),
        }
    };
    rows.iter()
        .map(|row| match DB::DIALECT {
            "postgres" => text(row, "QUERY PLAN"),
            "sqlite" => text(row, "detail"),
            _ => format!(
                "table={} type={} key={}",
                text(row, "table"),
                text(row, "type"),
                text(row, "key")
            ),
        })
        .collect()
}

/// Whether the plan names `index`: as a whole word, so that
/// `people_email_idx` is not found in `people_email_idx_alt`.
pub fn names(plan: &[String], index: &str) -> bool {
    plan.iter().any(|line| {
        line.split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | '='))
            .any(|word| word == index)
    })
}

/// Fails, printing the plan, unless it names `index`.
pub fn assert_uses(what: &str, plan: &[String], index: &str) {
    assert!(
        names(plan, index),
        "{what}: the plan does not use {index}:\n{}",
        plan.join("\n")
    );
}

/// Runs a statement without binds; fails with the statement and the error.
pub async fn execute<DB: Backend>(conn: &mut DB::Connection, sql: &str) {
    DB::execute_on(conn, sql, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
