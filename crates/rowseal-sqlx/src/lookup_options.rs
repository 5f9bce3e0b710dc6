//! [`Lookup`]: the options of a bounded blind-index lookup (a limit, an
//! order over plain columns, extra conditions), and the SQL they render to:
//! the checked `ORDER BY`, the keyset condition that continues after the
//! last candidate of a page, and the caller's conditions with their `{}`
//! placeholders renumbered for the database.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{FieldDef, Model};
use crate::value::{SqlType, Value};

/// A sort direction of [`Lookup::order_by`].
///
/// NULLs sort as if greater than every value, on every database: last in
/// [`Order::Asc`], first in [`Order::Desc`] (PostgreSQL's default; MySQL and
/// SQLite are made to agree).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Order {
    /// Ascending (NULLs last).
    #[default]
    Asc,
    /// Descending (NULLs first).
    Desc,
}

impl Order {
    fn sql(self) -> &'static str {
        match self {
            Order::Asc => " ASC",
            Order::Desc => " DESC",
        }
    }
}

/// The options of a bounded blind-index lookup
/// ([`Encryptor::find_by_with`](crate::Encryptor::find_by_with) and the
/// generated `find_by_<index>_with`): at most so many rows, in an order of
/// the model's plain columns, matching extra conditions.
///
/// ```
/// use rowseal_sqlx::{Lookup, Order, Value};
/// let options = Lookup::new()
///     .limit(20)
///     .order_by("visits", Order::Desc)
///     .filter("{} <= \"visits\" AND \"visits\" < {}", vec![Value::I64(3), Value::I64(10)]);
/// # let _ = options;
/// ```
///
/// # Limit: true matches, found in pages
/// A truncated blind index matches rows it should not (false positives),
/// which are only known after decryption. A limited lookup therefore reads
/// the candidates page by page (ordered, each page continuing after the last
/// candidate of the previous one: no `OFFSET`), decrypts each page, drops its
/// false positives, and stops once it holds `limit` true matches or the
/// candidates run out: the caller gets up to `limit` *true* matches. The
/// first page is `limit` candidates (one statement when the index has few
/// false positives), and each further page doubles, up to 4,096 candidates;
/// [`page_size`](Self::page_size) fixes the size instead. The cost is one
/// statement per page and one decryption per candidate read, false positives
/// included: for an index of `b` bits over `N` rows of the tenant, about
/// `N / 2^b` false positives per value looked up. Pages are separate
/// statements: run the lookup in a transaction for one snapshot; outside
/// one, a row inserted or moved by another writer between two pages may be
/// missed or found, and a row is never returned twice.
///
/// # Order
/// [`order_by`](Self::order_by) names a *plain* (unencrypted) field of the
/// model, by its Rust name or its column (an encrypted column, an index
/// column, a JSON column or an unknown name is [`Error::InvalidInput`]); it
/// may be called again for further keys (tie-breakers). The primary key
/// ends every order (the last tie-breaker), so that pages are well defined.
/// Without `order_by`, a limited or paged lookup is in primary-key order, and
/// an unlimited one in the database's order. Text sorts by the column's
/// collation (case-insensitive with MySQL's default one).
///
/// # Conditions
/// [`filter`](Self::filter) ANDs a condition of your own, in parentheses,
/// to the lookup. It is SQL text (write it yourself; never paste user input
/// into it: bind it). Each `{}` in it is the next of its binds, rendered as
/// the database's placeholder (`$n`, renumbered after the lookup's own binds,
/// on PostgreSQL; `?` on MySQL and SQLite). Quote identifiers for the
/// database you run on (`"visits"`: PostgreSQL and SQLite; `` `visits` ``:
/// MySQL and SQLite; [`Backend::push_ident`] does it), or leave lowercase
/// names unquoted (the same on all three). The lookup refuses ([`Error::InvalidInput`]), when it
/// runs, a condition that is not a self-contained expression: as many `{}`
/// as binds; no other `{` or `}`; parentheses balanced; no `;`, no comment
/// (`--`, `/*`, and `#` on MySQL); no placeholder of the database's own
/// (`?`, `$1`, and `:name` or `@name` on SQLite); no unterminated quote and
/// no backslash inside a quoted literal (bind such values instead). Inside
/// `'...'`, `"..."` and `` `...` `` everything else is left as written,
/// `{}` included.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    pub(crate) limit: Option<usize>,
    pub(crate) page_size: Option<usize>,
    pub(crate) order: Vec<(String, Order)>,
    pub(crate) filters: Vec<(String, Vec<Value>)>,
}

impl Lookup {
    /// No limit, no order, no condition: what `find_by` does.
    pub fn new() -> Self {
        Lookup::default()
    }

    /// At most `n` rows, all true matches (see the type's docs for how);
    /// `0` returns none without a query.
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Reads the candidates `n` (at least 1) at a time, every page the same
    /// size, instead of the default (`limit`, then doubling). Also pages an
    /// unlimited lookup (in primary-key order without `order_by`), bounding
    /// the candidates decrypted at once.
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = Some(n.max(1));
        self
    }

    /// Orders by the plain field or column `column`: the first call gives
    /// the main key, each further call a tie-breaker of the keys before it.
    /// Checked against the model when the lookup runs.
    #[must_use]
    pub fn order_by(mut self, column: impl Into<String>, order: Order) -> Self {
        self.order.push((column.into(), order));
        self
    }

    /// ANDs the condition `sql`, whose `{}` are `binds` in order (see the
    /// type's docs for what it may hold). Several conditions are all ANDed.
    #[must_use]
    pub fn filter(mut self, sql: impl Into<String>, binds: Vec<Value>) -> Self {
        self.filters.push((sql.into(), binds));
        self
    }

    /// Whether the lookup reads its candidates in pages.
    pub(crate) fn paged(&self) -> bool {
        self.limit.is_some() || self.page_size.is_some()
    }
}

/// One key of a lookup's order: a plain field and its direction.
#[derive(Clone, Copy)]
pub(crate) struct SortKey {
    pub(crate) field: &'static FieldDef,
    pub(crate) order: Order,
}

/// The order of `lookup` on `model`, checked, with the primary key appended
/// (when `with_primary_key` and it is not there yet), and after it the
/// tenant when the table's primary key is `(tenant, key)`.
pub(crate) fn sort_keys(
    model: &'static Model,
    lookup: &Lookup,
    with_primary_key: bool,
) -> Result<Vec<SortKey>> {
    let mut keys: Vec<SortKey> = Vec::with_capacity(lookup.order.len() + 1);
    for (name, order) in &lookup.order {
        let field = model
            .fields
            .iter()
            .find(|f| f.name == name.as_str())
            .or_else(|| model.fields.iter().find(|f| f.column == name.as_str()))
            .ok_or_else(|| Error::InvalidInput {
                reason: format!(
                    "{} has no field or column `{name}` to order by",
                    model.table()
                )
                .into(),
            })?;
        if field.is_encrypted() {
            return Err(Error::InvalidInput {
                reason: format!(
                    "cannot order {} by `{name}`: it is encrypted (only plain columns can be ordered by)",
                    model.table()
                ).into(),
            });
        }
        if field.sql_type == SqlType::Other {
            return Err(Error::InvalidInput {
                reason: format!(
                    "cannot order {} by `{name}`: a `sql_type` field's values are decoded by its own type, which a lookup's page cursor cannot carry",
                    model.table()
                ).into(),
            });
        }
        if field.sql_type == SqlType::Json {
            return Err(Error::InvalidInput {
                reason: format!(
                    "cannot order {} by `{name}`: a JSON column has no portable order",
                    model.table()
                )
                .into(),
            });
        }
        if !keys.iter().any(|k| std::ptr::eq(k.field, field)) {
            keys.push(SortKey {
                field,
                order: *order,
            });
        }
    }
    // The primary key makes the order total; under a composite key
    // `(tenant, key)` a global index's lookup spans tenants that share
    // keys, so the tenant breaks the last ties.
    let mut unique = vec![model.primary_key_field()];
    if model.tenant_in_primary_key {
        unique.push(model.tenant_field());
    }
    for field in unique {
        if with_primary_key && !keys.iter().any(|k| std::ptr::eq(k.field, field)) {
            keys.push(SortKey {
                field,
                order: Order::Asc,
            });
        }
    }
    Ok(keys)
}

/// Appends ` ORDER BY ...` (nothing without keys). A nullable column sorts
/// on `(column IS NULL)` first, so that NULLs are greatest everywhere.
pub(crate) fn push_order_by<DB: Backend>(sql: &mut String, keys: &[SortKey]) {
    for (i, k) in keys.iter().enumerate() {
        sql.push_str(if i == 0 { " ORDER BY " } else { ", " });
        if k.field.nullable {
            sql.push('(');
            DB::push_ident(sql, k.field.column);
            sql.push_str(" IS NULL)");
            sql.push_str(k.order.sql());
            sql.push_str(", ");
        }
        DB::push_ident(sql, k.field.column);
        sql.push_str(k.order.sql());
    }
}

/// Appends ` AND (...)`: the rows strictly after `cursor` (the sort keys'
/// values of the last row read) in the order of `keys`. Placeholders are
/// numbered after `n`; their values are pushed on `binds`.
pub(crate) fn push_after<DB: Backend>(
    sql: &mut String,
    keys: &[SortKey],
    cursor: &[Value],
    n: &mut usize,
    binds: &mut Vec<Value>,
) {
    let mut branches = 0;
    sql.push_str(" AND (");
    for (i, (k, v)) in keys.iter().zip(cursor).enumerate() {
        // Strictly after `v` on this key: nothing is after a NULL in
        // ascending order (NULLs last).
        let after_null = matches!((v.is_null(), k.order), (true, Order::Asc));
        if after_null {
            continue;
        }
        if branches > 0 {
            sql.push_str(" OR ");
        }
        branches += 1;
        sql.push('(');
        for (ek, ev) in keys[..i].iter().zip(cursor) {
            DB::push_ident(sql, ek.field.column);
            if ev.is_null() {
                sql.push_str(" IS NULL");
            } else {
                sql.push_str(" = ");
                *n += 1;
                DB::push_placeholder(sql, *n);
                binds.push(ev.clone());
            }
            sql.push_str(" AND ");
        }
        match (k.order, v.is_null()) {
            (Order::Desc, true) => {
                DB::push_ident(sql, k.field.column);
                sql.push_str(" IS NOT NULL");
            }
            (order, _) => {
                let nulls_after = order == Order::Asc && k.field.nullable;
                if nulls_after {
                    sql.push('(');
                }
                DB::push_ident(sql, k.field.column);
                sql.push_str(if order == Order::Asc { " > " } else { " < " });
                *n += 1;
                DB::push_placeholder(sql, *n);
                binds.push(v.clone());
                if nulls_after {
                    sql.push_str(" OR ");
                    DB::push_ident(sql, k.field.column);
                    sql.push_str(" IS NULL)");
                }
            }
        }
        sql.push(')');
    }
    if branches == 0 {
        sql.push_str("1 = 0");
    }
    sql.push(')');
}

/// Appends the caller's condition `fragment` with each `{}` replaced by the
/// next placeholder after `n` (its value from `values` pushed on `binds`),
/// after checking that it is a self-contained expression (see [`Lookup`]).
/// Nothing is appended on error.
pub(crate) fn push_filter<DB: Backend>(
    sql: &mut String,
    fragment: &str,
    values: &[Value],
    n: &mut usize,
    binds: &mut Vec<Value>,
) -> Result<()> {
    let bad = |what: &str| Error::InvalidInput {
        reason: format!("lookup condition: {what}").into(),
    };
    if fragment.trim().is_empty() {
        return Err(bad("empty"));
    }
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let (mysql, sqlite) = (DB::DIALECT == "mysql", DB::DIALECT == "sqlite");
    let mut out = String::with_capacity(fragment.len() + 8);
    let mut pushed: Vec<Value> = Vec::with_capacity(values.len());
    let mut next = *n;
    let mut depth = 0usize;
    let mut prev: Option<char> = None;
    let mut chars = fragment.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == '\\' {
                        return Err(bad(
                            "a backslash inside a quoted literal (bind the value instead)",
                        ));
                    }
                    out.push(q);
                    if q == c {
                        if chars.peek() == Some(&c) {
                            // A doubled quote stays inside.
                            chars.next();
                            out.push(c);
                        } else {
                            closed = true;
                            break;
                        }
                    }
                }
                if !closed {
                    return Err(bad("an unterminated quote"));
                }
            }
            '{' => {
                if chars.next() != Some('}') {
                    return Err(bad("`{` is only allowed as the placeholder `{}`"));
                }
                let v = values
                    .get(pushed.len())
                    .ok_or_else(|| bad("more `{}` than binds"))?;
                pushed.push(v.clone());
                next += 1;
                DB::push_placeholder(&mut out, next);
            }
            '}' => return Err(bad("`}` is only allowed in the placeholder `{}`")),
            '(' => {
                depth += 1;
                out.push(c);
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| bad("a `)` closes more than was opened"))?;
                out.push(c);
            }
            ';' => return Err(bad("`;`")),
            '-' if chars.peek() == Some(&'-') => return Err(bad("a comment (`--`)")),
            '/' if chars.peek() == Some(&'*') => return Err(bad("a comment (`/*`)")),
            '#' if mysql => return Err(bad("a comment (`#`)")),
            '?' if mysql || sqlite => return Err(bad("a `?` placeholder (write `{}`)")),
            '$' if !prev.is_some_and(is_ident) => {
                return Err(bad("a `$` placeholder or quote (write `{}`)"))
            }
            ':' | '@' if sqlite && chars.peek().is_some_and(|&d| is_ident(d)) => {
                return Err(bad("a named placeholder (write `{}`)"))
            }
            _ => out.push(c),
        }
        prev = Some(c);
    }
    if depth != 0 {
        return Err(bad("unbalanced parentheses"));
    }
    if pushed.len() != values.len() {
        return Err(bad("fewer `{}` than binds"));
    }
    sql.push_str(&out);
    binds.append(&mut pushed);
    *n = next;
    Ok(())
}

#[cfg(all(test, feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod tests {
    use super::*;

    #[test]
    fn orders_by_plain_rowseal_typed_columns_only() {
        static FIELDS: [FieldDef; 4] = [
            FieldDef::plain("id", "id", SqlType::I64, false),
            FieldDef::plain("tenant", "tenant", SqlType::Text, false),
            FieldDef::passthrough("level", "level", "INTEGER", false),
            FieldDef::encrypted("secret", "secret", crate::ValueType::String, false),
        ];
        static MODEL: Model = Model::__new(rowseal_core::RecordSpec::new("t", "t"), 1, 0, &FIELDS);
        let keys = sort_keys(&MODEL, &Lookup::new().order_by("tenant", Order::Desc), true)
            .unwrap_or_default();
        assert_eq!(
            keys.iter().map(|k| k.field.name).collect::<Vec<_>>(),
            ["tenant", "id"]
        );
        for refused in ["level", "secret", "nope"] {
            assert!(matches!(
                sort_keys(&MODEL, &Lookup::new().order_by(refused, Order::Asc), true),
                Err(Error::InvalidInput { .. })
            ));
        }
    }

    fn render<DB: Backend>(fragment: &str, values: &[Value], after: usize) -> Result<String> {
        let (mut sql, mut n, mut binds) = (String::from("x"), after, Vec::new());
        push_filter::<DB>(&mut sql, fragment, values, &mut n, &mut binds)?;
        assert_eq!(binds.len(), values.len());
        assert_eq!(n, after + values.len());
        Ok(sql)
    }

    #[test]
    fn filter_placeholders_are_renumbered_per_database() {
        let two = [Value::I64(1), Value::I64(2)];
        let f = "a > {} AND b = '{}' AND \"c\"\"{}\" < {}";
        assert_eq!(
            render::<sqlx::Postgres>(f, &two, 3).ok().as_deref(),
            Some("xa > $4 AND b = '{}' AND \"c\"\"{}\" < $5")
        );
        assert_eq!(
            render::<sqlx::Sqlite>(f, &two, 3).ok().as_deref(),
            Some("xa > ? AND b = '{}' AND \"c\"\"{}\" < ?")
        );
        assert_eq!(
            render::<sqlx::MySql>("`a$b` = {} AND c::int = 1", &two[..1], 0)
                .ok()
                .as_deref(),
            Some("x`a$b` = ? AND c::int = 1")
        );
        // The jsonb `?` operator is PostgreSQL's own, not a placeholder.
        assert!(render::<sqlx::Postgres>("j ? 'k'", &[], 0).is_ok());
    }

    #[test]
    fn filters_that_are_not_one_expression_are_refused() {
        let one = [Value::I64(1)];
        for (f, values) in [
            ("", &[][..]),
            ("a > {}", &[][..]),
            ("a > 1", &one[..]),
            ("a > {} AND b > {}", &one[..]),
            ("a > 1) OR (1 = 1", &[][..]),
            ("(a > 1", &[][..]),
            ("a > 1; DROP TABLE t", &[][..]),
            ("a > 1 -- x", &[][..]),
            ("a > 1 /* x */", &[][..]),
            ("a > $1", &one[..]),
            ("a > $$x$$", &[][..]),
            ("a = 'x", &[][..]),
            ("a = 'x\\' OR 1 = 1 OR a = '", &[][..]),
            ("a > {1}", &one[..]),
            ("a > }", &[][..]),
        ] {
            for r in [
                render::<sqlx::Postgres>(f, values, 0),
                render::<sqlx::Sqlite>(f, values, 0),
                render::<sqlx::MySql>(f, values, 0),
            ] {
                assert!(matches!(r, Err(Error::InvalidInput { .. })), "{f:?}: {r:?}");
            }
        }
        for f in ["a > ?", "a = :name", "a = @name"] {
            assert!(render::<sqlx::Sqlite>(f, &[], 0).is_err(), "{f}");
        }
        assert!(render::<sqlx::MySql>("a > ?", &[], 0).is_err());
        assert!(render::<sqlx::MySql>("a > 1 # x", &[], 0).is_err());
    }

    #[test]
    fn keyset_condition_follows_the_order_and_its_nulls() {
        const FIELDS: [FieldDef; 2] = [
            FieldDef::plain("tier", "tier", SqlType::I32, true),
            FieldDef::plain("id", "id", SqlType::I64, false),
        ];
        static F: [FieldDef; 2] = FIELDS;
        let keys = |order| {
            [
                SortKey {
                    field: &F[0],
                    order,
                },
                SortKey {
                    field: &F[1],
                    order: Order::Asc,
                },
            ]
        };
        let after = |order, tier: Value| {
            let (mut sql, mut n, mut binds) = (String::new(), 0, Vec::new());
            push_after::<sqlx::Postgres>(
                &mut sql,
                &keys(order),
                &[tier, Value::I64(7)],
                &mut n,
                &mut binds,
            );
            (sql, binds.len())
        };
        assert_eq!(
            after(Order::Asc, Value::I32(2)),
            (
                " AND (((\"tier\" > $1 OR \"tier\" IS NULL)) OR (\"tier\" = $2 AND \"id\" > $3))"
                    .into(),
                3
            )
        );
        assert_eq!(
            after(Order::Asc, Value::Null(SqlType::I32)),
            (" AND ((\"tier\" IS NULL AND \"id\" > $1))".into(), 1)
        );
        assert_eq!(
            after(Order::Desc, Value::I32(2)),
            (
                " AND ((\"tier\" < $1) OR (\"tier\" = $2 AND \"id\" > $3))".into(),
                3
            )
        );
        assert_eq!(
            after(Order::Desc, Value::Null(SqlType::I32)),
            (
                " AND ((\"tier\" IS NOT NULL) OR (\"tier\" IS NULL AND \"id\" > $1))".into(),
                1
            )
        );
        let mut sql = String::new();
        push_order_by::<sqlx::Postgres>(&mut sql, &keys(Order::Desc));
        assert_eq!(
            sql,
            " ORDER BY (\"tier\" IS NULL) DESC, \"tier\" DESC, \"id\" ASC"
        );
    }
}
