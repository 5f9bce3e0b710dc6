//! Conditional writes of many rows, each database its fastest way.
//!
//! Every job writes a row only if it still holds what the job read (its key
//! header, its ciphertexts or plaintexts: a compare-and-swap), so that an
//! application write made meanwhile is never overwritten. [`write_rows`]
//! sends a batch of such writes as few statements as the database allows:
//!
//! - PostgreSQL: one `UPDATE … FROM UNNEST(<one array per column>)` per
//!   shape of write (the columns set and compared), whatever the number of
//!   rows, so one prepared statement serves every batch of a job;
//! - MySQL/MariaDB: `UPDATE … JOIN (SELECT … UNION ALL …)` of a few fixed
//!   row counts ([`chunk_sizes`]), each prepared once;
//! - SQLite: one statement per row (in-process, under the write lock the
//!   batch already holds, so a round trip costs nothing).
//!
//! A multi-row statement reports how many rows it wrote, not which: when it
//! wrote fewer than it was given (a row changed since it was read), it is
//! rolled back to a savepoint taken just before it and its rows are written
//! one by one, so that the caller always learns the outcome of each row.

use std::collections::BTreeMap;

use rowseal_sqlx::Value;

use crate::db::{ident, ph, CliDb};
use crate::error::Result;
use crate::registry::{self, TableDef};

/// Most rows in one MySQL/MariaDB statement; its binds stay well below the
/// protocol's 65,535 as well.
const MYSQL_MAX_ROWS: usize = 1000;
const MYSQL_MAX_BINDS: usize = 30_000;

/// One row's conditional update. (No `Debug`: it holds ciphertexts and,
/// for `decrypt-column`, plaintexts.)
pub struct RowWrite {
    /// The row: its primary key and its tenant, as the table holds them
    /// (the tenant compared byte for byte, as every tenant filter is:
    /// [`registry::tenant_ph`]).
    pub key: Value,
    /// See [`RowWrite::key`].
    pub tenant: Value,
    /// The columns set, and their new values.
    pub set: Vec<(String, Value)>,
    /// The compare-and-swap: each column still holds this value (`None`:
    /// still NULL). Text is compared byte for byte.
    pub expect: Vec<(String, Option<Value>)>,
}

impl RowWrite {
    /// The row by its identity, with nothing set or compared yet.
    pub fn new(key: Value, tenant: Value) -> Self {
        Self {
            key,
            tenant,
            set: Vec::new(),
            expect: Vec::new(),
        }
    }

    /// Sets `column` to `value`.
    pub fn set(mut self, column: &str, value: Value) -> Self {
        self.set.push((column.to_owned(), value));
        self
    }

    /// Writes only if `column` still holds `value` (`None`: NULL).
    pub fn expect(mut self, column: &str, value: Option<Value>) -> Self {
        self.expect.push((column.to_owned(), value));
        self
    }

    /// What decides the statement text: the columns set and compared, and
    /// which comparisons are with NULL or with text.
    fn shape(&self) -> Shape {
        Shape {
            set: self.set.iter().map(|(c, _)| c.clone()).collect(),
            expect: self
                .expect
                .iter()
                .map(|(c, v)| {
                    let kind = match v {
                        None => Expect::Null,
                        Some(Value::Text(_)) => Expect::Text,
                        Some(_) => Expect::Equal,
                    };
                    (c.clone(), kind)
                })
                .collect(),
        }
    }

    /// The binds of a row of a multi-row statement, in the order of
    /// [`Shape::names`]: key, tenant, the values set, the values compared
    /// (not the NULLs).
    fn push_binds(&self, out: &mut Vec<Value>) {
        out.push(self.key.clone());
        out.push(self.tenant.clone());
        out.extend(self.set.iter().map(|(_, v)| v.clone()));
        out.extend(self.expect.iter().filter_map(|(_, v)| v.clone()));
    }

    /// The binds of [`Shape::row_update`], in the order its placeholders
    /// appear (MySQL's and SQLite's are positional): the values set, key,
    /// tenant, the values compared.
    fn into_row_binds(self) -> Vec<Value> {
        let mut out: Vec<Value> = self.set.into_iter().map(|(_, v)| v).collect();
        out.push(self.key);
        out.push(self.tenant);
        out.extend(self.expect.into_iter().filter_map(|(_, v)| v));
        out
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    Null,
    Text,
    Equal,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    set: Vec<String>,
    expect: Vec<(String, Expect)>,
}

impl Shape {
    /// Binds per row.
    fn width(&self) -> usize {
        2 + self.set.len()
            + self
                .expect
                .iter()
                .filter(|(_, e)| *e != Expect::Null)
                .count()
    }

    /// The names of a row's values in the derived table `v`, in bind order.
    fn names(&self) -> Vec<String> {
        let mut names = vec!["k".to_owned(), "t".to_owned()];
        names.extend((0..self.set.len()).map(|i| format!("s{i}")));
        let mut g = 0;
        for (_, e) in &self.expect {
            if *e != Expect::Null {
                names.push(format!("g{g}"));
                g += 1;
            }
        }
        names
    }

    /// `x.key = v.k AND x.tenant = v.t AND x.c = v.g0 AND x.d IS NULL …`;
    /// text compared byte for byte (on MySQL/MariaDB, whose collations may
    /// not: `BINARY`).
    fn join_condition<D: CliDb>(&self, def: &TableDef) -> String {
        let binary = |text: bool| {
            if text && D::DIALECT == "mysql" {
                "BINARY "
            } else {
                ""
            }
        };
        let mut cond = vec![
            format!("x.{} = v.k", ident::<D>(&def.primary_key)),
            format!(
                "x.{} = {}v.t",
                ident::<D>(&def.tenant),
                binary(def.tenant_type() == rowseal_sqlx::SqlType::Text)
            ),
        ];
        let mut g = 0;
        for (c, e) in &self.expect {
            match e {
                Expect::Null => cond.push(format!("x.{} IS NULL", ident::<D>(c))),
                e => {
                    cond.push(format!(
                        "x.{} = {}v.g{g}",
                        ident::<D>(c),
                        binary(*e == Expect::Text)
                    ));
                    g += 1;
                }
            }
        }
        cond.join(" AND ")
    }

    /// PostgreSQL: every row of the shape in one statement.
    fn unnest_update<D: CliDb>(&self, def: &TableDef) -> String {
        let sets: Vec<String> = self
            .set
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = v.s{i}", ident::<D>(c)))
            .collect();
        let arrays: Vec<String> = (1..=self.width()).map(ph::<D>).collect();
        format!(
            "UPDATE {} AS x SET {} FROM UNNEST({}) AS v({}) WHERE {}",
            ident::<D>(&def.table),
            sets.join(", "),
            arrays.join(", "),
            self.names().join(", "),
            self.join_condition::<D>(def),
        )
    }

    /// MySQL/MariaDB: `rows` rows of the shape in one statement.
    fn join_update<D: CliDb>(&self, def: &TableDef, rows: usize) -> String {
        let first: Vec<String> = self.names().iter().map(|n| format!("? AS {n}")).collect();
        let other = vec!["?"; self.width()].join(", ");
        let mut sql = format!(
            "UPDATE {} AS x JOIN (SELECT {}",
            ident::<D>(&def.table),
            first.join(", ")
        );
        for _ in 1..rows {
            sql.push_str(" UNION ALL SELECT ");
            sql.push_str(&other);
        }
        let sets: Vec<String> = self
            .set
            .iter()
            .enumerate()
            .map(|(i, c)| format!("x.{} = v.s{i}", ident::<D>(c)))
            .collect();
        sql.push_str(&format!(
            ") AS v ON {} SET {}",
            self.join_condition::<D>(def),
            sets.join(", ")
        ));
        sql
    }

    /// One row of the shape, binds in [`RowWrite::into_row_binds`] order.
    fn row_update<D: CliDb>(&self, def: &TableDef) -> String {
        let mut n = 0;
        let sets: Vec<String> = self
            .set
            .iter()
            .map(|c| {
                n += 1;
                format!("{} = {}", ident::<D>(c), ph::<D>(n))
            })
            .collect();
        let mut cond = vec![
            format!("{} = {}", ident::<D>(&def.primary_key), ph::<D>(n + 1)),
            format!(
                "{} = {}",
                ident::<D>(&def.tenant),
                registry::tenant_ph::<D>(def, n + 2)
            ),
        ];
        n += 2;
        for (c, e) in &self.expect {
            match e {
                Expect::Null => cond.push(format!("{} IS NULL", ident::<D>(c))),
                Expect::Text => {
                    n += 1;
                    cond.push(format!(
                        "{} = {}",
                        ident::<D>(c),
                        crate::db::exact_ph::<D>(n)
                    ));
                }
                Expect::Equal => {
                    n += 1;
                    cond.push(format!("{} = {}", ident::<D>(c), ph::<D>(n)));
                }
            }
        }
        format!(
            "UPDATE {} SET {} WHERE {}",
            ident::<D>(&def.table),
            sets.join(", "),
            cond.join(" AND ")
        )
    }
}

/// Writes `rows` to `def`'s table on `conn` (in the caller's transaction,
/// if any), each only if it still matches its [`RowWrite::expect`]; returns
/// for each row, in order, whether it was written.
pub async fn write_rows<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    rows: Vec<RowWrite>,
) -> Result<Vec<bool>> {
    let mut written = vec![false; rows.len()];
    let mut shapes: BTreeMap<Shape, Vec<(usize, RowWrite)>> = BTreeMap::new();
    for (i, row) in rows.into_iter().enumerate() {
        shapes.entry(row.shape()).or_default().push((i, row));
    }
    for (shape, rows) in shapes {
        match D::DIALECT {
            "postgres" => {
                let sql = shape.unnest_update::<D>(def);
                write_together::<D>(conn, def, &shape, &sql, rows, &mut written).await?;
            }
            "mysql" => {
                let most = (MYSQL_MAX_BINDS / shape.width()).clamp(1, MYSQL_MAX_ROWS);
                let mut rest = rows;
                for size in chunk_sizes(rest.len(), most) {
                    let tail = rest.split_off(size);
                    let part = std::mem::replace(&mut rest, tail);
                    let sql = shape.join_update::<D>(def, size);
                    write_together::<D>(conn, def, &shape, &sql, part, &mut written).await?;
                }
            }
            _ => write_each::<D>(conn, def, &shape, rows, &mut written).await?,
        }
    }
    Ok(written)
}

/// [`write_rows`], counted: (rows written, rows changed since they were
/// read and left alone).
pub async fn write_counted<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    rows: Vec<RowWrite>,
) -> Result<(u64, u64)> {
    let outcomes = write_rows::<D>(conn, def, rows).await?;
    let written = outcomes.iter().filter(|w| **w).count();
    Ok((written as u64, (outcomes.len() - written) as u64))
}

/// `rows` in one statement (`sql`), under a savepoint: if it wrote fewer
/// rows than it was given, it is undone and the rows are written one by one
/// (which tells which of them changed). A row whose values have no array
/// form (PostgreSQL) is written one by one as well.
async fn write_together<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    shape: &Shape,
    sql: &str,
    rows: Vec<(usize, RowWrite)>,
    written: &mut [bool],
) -> Result<()> {
    let n = rows.len();
    let at: Vec<usize> = rows.iter().map(|(i, _)| *i).collect();
    // Cloned so that the rows can be written again, one by one, after a
    // rollback; a batch's binds are a few hundred kilobytes at most.
    let mut binds = Vec::with_capacity(n * shape.width());
    for (_, row) in &rows {
        row.push_binds(&mut binds);
    }
    let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
    let done = if D::DIALECT == "postgres" {
        match D::execute_column_arrays_on(&mut *savepoint, sql, binds, shape.width()) {
            Ok(run) => Some(run.await?),
            Err(_) => None,
        }
    } else {
        Some(D::execute_on(&mut *savepoint, sql, binds).await?)
    };
    if done == Some(n as u64) {
        savepoint.commit().await?;
        for i in at {
            written[i] = true;
        }
        return Ok(());
    }
    savepoint.rollback().await?;
    write_each::<D>(conn, def, shape, rows, written).await
}

/// `rows` one statement each.
async fn write_each<D: CliDb>(
    conn: &mut D::Connection,
    def: &TableDef,
    shape: &Shape,
    rows: Vec<(usize, RowWrite)>,
    written: &mut [bool],
) -> Result<()> {
    let sql = shape.row_update::<D>(def);
    for (i, row) in rows {
        written[i] = D::execute_on(&mut *conn, &sql, row.into_row_binds()).await? == 1;
    }
    Ok(())
}

/// The sizes to cut `n` rows into: as many of `most` as fit, then the rest
/// as powers of two (largest first). A statement's text depends on its row
/// count only, so a shape has at most one statement per size (about a dozen,
/// each prepared once and kept in the connection's statement cache) rather
/// than one per batch length seen.
fn chunk_sizes(n: usize, most: usize) -> Vec<usize> {
    let most = most.max(1);
    let mut sizes = vec![most; n / most];
    let mut rest = n % most;
    while rest > 0 {
        let p = 1usize << (usize::BITS - 1 - rest.leading_zeros());
        sizes.push(p);
        rest -= p;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use rowseal_sqlx::{schema, DbRow, SqlType};

    use super::*;

    #[derive(rowseal_sqlx::Encrypted)]
    #[rowseal(table = "people", record_type = "person", tenant = tenant_id, primary_key = id, bind_primary_key)]
    #[allow(dead_code)]
    struct Person {
        id: i64,
        tenant_id: String,
        #[rowseal(encrypt)]
        name: String,
        #[rowseal(encrypt)]
        email: Option<String>,
        nick: Option<String>,
    }

    fn byte(id: i64) -> u8 {
        u8::try_from(id).unwrap()
    }

    /// What the table holds: (id, name, email, header, key version, nick).
    type Row = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        i64,
        Option<String>,
    );

    /// Each row is written only if it still holds what it is expected to
    /// (a changed header, a NULL, text differing only in case, another
    /// tenant, a tenant differing only in case all leave it alone), the
    /// outcome of each row is reported in order whether its statement
    /// wrote all of its rows or not, and the rows written are written whole.
    async fn compare_and_swap<D: CliDb>(db: rowseal_test_support::db::TestDb<D>)
    where
        for<'e> &'e sqlx::Pool<D>: sqlx::Executor<'e, Database = D>,
    {
        schema::install(&db.pool).await.unwrap();
        schema::create_table::<Person, _>(&db.pool).await.unwrap();
        schema::register::<Person, _>(&db.pool).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let def = registry::tables::<D>(&mut conn, &["people".to_owned()])
            .await
            .unwrap()
            .remove(0);
        drop(conn);
        let enc = def.encrypted_columns();
        let (h, kv) = (def.header_column.as_str(), def.key_version_column.as_str());
        let insert = format!(
            "INSERT INTO people (id, tenant_id, {}, {}, {h}, {kv}, nick) VALUES ({})",
            enc[0],
            enc[1],
            (1..=7).map(ph::<D>).collect::<Vec<_>>().join(", ")
        );
        for id in 1..=8i64 {
            let tenant = match id {
                6 => "other",
                7 => "ACME",
                _ => "acme",
            };
            let nick = if id == 4 {
                Value::Null(SqlType::Text)
            } else {
                Value::Text(format!("bob{id}"))
            };
            let values = vec![
                Value::I64(id),
                Value::Text(tenant.into()),
                Value::Bytes(vec![1, byte(id)]),
                Value::Bytes(vec![2, byte(id)]),
                Value::Bytes(vec![9, byte(id)]),
                Value::I64(1),
                nick,
            ];
            D::execute(&db.pool, &insert, values).await.unwrap();
        }

        let write = |id: i64, old: Vec<u8>| {
            RowWrite::new(Value::I64(id), Value::Text("acme".into()))
                .set(enc[0], Value::Bytes(vec![11, byte(id)]))
                .set(
                    enc[1],
                    if id == 3 {
                        Value::Null(SqlType::Bytes)
                    } else {
                        Value::Bytes(vec![12, byte(id)])
                    },
                )
                .set(h, Value::Bytes(vec![19, byte(id)]))
                .set(kv, Value::I64(7))
                .expect(h, Some(Value::Bytes(old)))
        };
        let rows = vec![
            write(1, vec![9, 1]),
            // Written by the application since it was read.
            write(2, vec![9, 99]),
            write(3, vec![9, 3]),
            write(4, vec![9, 4]).expect("nick", None),
            // Text compared byte for byte, whatever the collation.
            write(5, vec![9, 5]).expect("nick", Some(Value::Text("BOB5".into()))),
            // Another tenant's row, and one whose tenant differs in case.
            write(6, vec![9, 6]),
            write(7, vec![9, 7]),
            write(8, vec![9, 8]).expect("nick", Some(Value::Text("bob8".into()))),
        ];
        let mut tx = db.pool.begin().await.unwrap();
        let written = write_rows::<D>(&mut tx, &def, rows).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            written,
            vec![true, false, true, true, false, false, false, true],
            "{}",
            db.kind
        );
        // A statement that writes every row it is given.
        let again = |id: i64| {
            RowWrite::new(Value::I64(id), Value::Text("acme".into()))
                .set(kv, Value::I64(8))
                .expect(h, Some(Value::Bytes(vec![19, byte(id)])))
        };
        let mut tx = db.pool.begin().await.unwrap();
        let written = write_rows::<D>(&mut tx, &def, vec![again(1), again(3), again(4)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(written, vec![true; 3], "{}", db.kind);

        let select = format!(
            "SELECT id, {}, {}, {h}, {kv}, nick FROM people ORDER BY id",
            enc[0], enc[1]
        );
        let mut seen: Vec<Row> = Vec::new();
        for r in &D::fetch_all(&db.pool, &select, vec![]).await.unwrap() {
            let bytes = |i| r.read_opt_bytes(i).unwrap().map(<[u8]>::to_vec);
            let nick = crate::db::read_text(r, 5).unwrap();
            seen.push((
                crate::db::read_i64(r, 0).unwrap(),
                bytes(1),
                bytes(2),
                bytes(3),
                crate::db::read_i64(r, 4).unwrap(),
                (!nick.is_empty()).then_some(nick),
            ));
        }
        let b = |a: u8, id: i64| Some(vec![a, byte(id)]);
        let nick = |id: i64| (id != 4).then(|| format!("bob{id}"));
        let old = |id| (id, b(1, id), b(2, id), b(9, id), 1, nick(id));
        let new = |id, kv| (id, b(11, id), b(12, id), b(19, id), kv, nick(id));
        assert_eq!(
            seen,
            vec![
                new(1, 8),
                old(2),
                (3, b(11, 3), None, b(19, 3), 8, nick(3)),
                new(4, 8),
                old(5),
                old(6),
                old(7),
                new(8, 7),
            ],
            "{}",
            db.kind
        );
        db.finish().await;
    }

    #[tokio::test]
    async fn batch_writes_compare_and_swap_postgres() {
        if let Some(db) = rowseal_test_support::db::postgres(2).await {
            compare_and_swap(db).await;
        }
    }

    #[tokio::test]
    async fn batch_writes_compare_and_swap_mariadb() {
        if let Some(db) = rowseal_test_support::db::mysql(2).await {
            compare_and_swap(db).await;
        }
    }

    #[tokio::test]
    async fn batch_writes_compare_and_swap_sqlite() {
        compare_and_swap(rowseal_test_support::db::sqlite(2).await).await;
    }

    #[test]
    fn chunks_are_full_batches_then_powers_of_two() {
        assert_eq!(chunk_sizes(2000, 1000), vec![1000, 1000]);
        assert_eq!(chunk_sizes(1000, 1000), vec![1000]);
        assert_eq!(chunk_sizes(13, 1000), vec![8, 4, 1]);
        assert_eq!(chunk_sizes(1005, 1000), vec![1000, 4, 1]);
        assert_eq!(chunk_sizes(0, 1000), Vec::<usize>::new());
        assert_eq!(chunk_sizes(3, 0), vec![1, 1, 1]);
        for n in 0..300 {
            assert_eq!(chunk_sizes(n, 100).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn one_unnest_statement_per_shape() {
        let entry = serde_json::json!({
            "format": 1, "record_type": "person", "table": "people", "key_mode": "derived",
            "bind_primary_key": true, "tenant": "tenant_id", "primary_key": "id",
            "primary_key_type": "i64",
            "fields": [
                {"name": "id", "column": "id", "sql_type": "i64", "nullable": false},
                {"name": "tenant_id", "column": "tenant_id", "sql_type": "text", "nullable": false}
            ]
        });
        let def = TableDef::from_registry_json("people", &entry.to_string()).unwrap();
        let row = RowWrite::new(Value::I64(1), Value::Text("acme".into()))
            .set("name", Value::Bytes(vec![1]))
            .set("v", Value::I64(2))
            .expect("h", Some(Value::Bytes(vec![3])))
            .expect("legacy", None)
            .expect("nick", Some(Value::Text("bob".into())));
        assert_eq!(
            row.shape().unnest_update::<sqlx::Postgres>(&def),
            "UPDATE \"people\" AS x SET \"name\" = v.s0, \"v\" = v.s1 \
             FROM UNNEST($1, $2, $3, $4, $5, $6) AS v(k, t, s0, s1, g0, g1) \
             WHERE x.\"id\" = v.k AND x.\"tenant_id\" = v.t AND x.\"h\" = v.g0 \
             AND x.\"legacy\" IS NULL AND x.\"nick\" = v.g1"
        );
        assert_eq!(
            row.shape().join_update::<sqlx::MySql>(&def, 2),
            "UPDATE `people` AS x JOIN (SELECT ? AS k, ? AS t, ? AS s0, ? AS s1, ? AS g0, ? AS g1 \
             UNION ALL SELECT ?, ?, ?, ?, ?, ?) AS v \
             ON x.`id` = v.k AND x.`tenant_id` = BINARY v.t AND x.`h` = v.g0 \
             AND x.`legacy` IS NULL AND x.`nick` = BINARY v.g1 SET x.`name` = v.s0, x.`v` = v.s1"
        );
        assert_eq!(
            row.shape().row_update::<sqlx::Postgres>(&def),
            "UPDATE \"people\" SET \"name\" = $1, \"v\" = $2 \
             WHERE \"id\" = $3 AND \"tenant_id\" = $4 AND \"h\" = $5 \
             AND \"legacy\" IS NULL AND \"nick\" = $6"
        );
        assert_eq!(
            row.shape().row_update::<sqlx::MySql>(&def),
            "UPDATE `people` SET `name` = ?, `v` = ? \
             WHERE `id` = ? AND `tenant_id` = BINARY ? AND `h` = ? \
             AND `legacy` IS NULL AND `nick` = BINARY ?"
        );
    }
}
