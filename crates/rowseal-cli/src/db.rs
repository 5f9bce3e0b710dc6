//! The databases: what the tool needs beyond rowseal-sqlx's [`Backend`].

use std::str::FromStr;
use std::time::Duration;

use futures_core::future::BoxFuture;
use rowseal_sqlx::{Backend, Value};

use crate::error::{CliError, Result};

/// What the jobs need from a database, on top of [`Backend`].
pub trait CliDb: Backend {
    /// Appended to a batch SELECT to claim its rows: `FOR UPDATE SKIP LOCKED`
    /// where the database has it, so that workers and processes never take
    /// the same rows; empty on SQLite (one writer at a time).
    const CLAIM: &'static str;
    /// The statement that opens a write transaction (`BEGIN IMMEDIATE` on
    /// SQLite, so that the batch holds the write lock from its first read).
    const BEGIN: &'static str;
    /// The statement that opens the write transaction of a batch whose
    /// rows the job redoes if it is lost ([`Self::BEGIN`] elsewhere). On
    /// PostgreSQL its commit does not wait for the WAL flush
    /// (`synchronous_commit = off`, this transaction only): a server crash
    /// may lose the last batches, each whole (its rows and its count in
    /// `rowseal_jobs` together), and the job redoes them; the job's final
    /// commit is synchronous, and flushing it flushes every batch before
    /// it, so a job recorded `done` never lost a batch. Its statements are
    /// also planned once for any parameters (`plan_cache_mode =
    /// force_generic_plan`): the custom plan of a batch `UPDATE … FROM
    /// UNNEST` hashes every row of the tenant (several times slower than
    /// the generic plan's primary-key lookups), and PostgreSQL tries five
    /// custom plans per connection before it settles.
    const BEGIN_BATCH: &'static str;
    /// The type to `CAST` a timestamp to, to read it as text.
    const TEXT: &'static str;
    /// Whether several writers may run at once.
    const CONCURRENT_WRITERS: bool;

    /// The first byte of a binary column as two uppercase hex digits (NULL
    /// for NULL): a row header's format version, counted by `status`.
    fn first_byte_hex(column: &str) -> String;

    /// Runs a query on a connection; returns every row.
    fn fetch_all_on<'e>(
        conn: &'e mut Self::Connection,
        sql: &'e str,
        values: Vec<Value>,
    ) -> BoxFuture<'e, rowseal_sqlx::Result<Vec<Self::Row>>>;
}

macro_rules! cli_db {
    ($db:ty, $claim:expr, $begin:expr, $begin_batch:expr, $text:expr, $conc:expr, $first_byte:expr $(,)?) => {
        impl CliDb for $db {
            const CLAIM: &'static str = $claim;
            const BEGIN: &'static str = $begin;
            const BEGIN_BATCH: &'static str = $begin_batch;
            const TEXT: &'static str = $text;
            const CONCURRENT_WRITERS: bool = $conc;

            fn first_byte_hex(column: &str) -> String {
                ($first_byte)(column)
            }

            fn fetch_all_on<'e>(
                conn: &'e mut Self::Connection,
                sql: &'e str,
                values: Vec<Value>,
            ) -> BoxFuture<'e, rowseal_sqlx::Result<Vec<Self::Row>>> {
                <$db as Backend>::fetch_all(conn, sql, values)
            }
        }
    };
}

cli_db!(
    sqlx::Postgres,
    " FOR UPDATE SKIP LOCKED",
    "BEGIN",
    "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_generic_plan",
    "TEXT",
    true,
    |c: &str| format!("UPPER(encode(substring({c} from 1 for 1), 'hex'))"),
);
cli_db!(
    sqlx::MySql,
    " FOR UPDATE SKIP LOCKED",
    "BEGIN",
    "BEGIN",
    "CHAR",
    true,
    |c: &str| format!("HEX(SUBSTRING({c}, 1, 1))")
);
cli_db!(
    sqlx::Sqlite,
    "",
    "BEGIN IMMEDIATE",
    "BEGIN IMMEDIATE",
    "TEXT",
    false,
    |c: &str| format!("hex(substr({c}, 1, 1))")
);

/// The kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

/// The kind of database of `url`, and the URL as sqlx wants it.
pub fn kind(url: &str) -> Result<(Kind, String)> {
    let scheme = url.split(':').next().unwrap_or("");
    match scheme {
        "postgres" | "postgresql" => Ok((Kind::Postgres, url.to_owned())),
        "mysql" => Ok((Kind::MySql, url.to_owned())),
        "mariadb" => Ok((Kind::MySql, format!("mysql{}", &url["mariadb".len()..]))),
        "sqlite" => Ok((Kind::Sqlite, url.to_owned())),
        _ => Err(CliError::config(
            "database URL must start with postgres://, mysql://, mariadb:// or sqlite:",
        )),
    }
}

fn connect_err(e: sqlx::Error) -> CliError {
    // Never echo the URL: it may hold a password.
    CliError::db(format!("cannot connect to the database: {e}"))
}

/// A PostgreSQL pool for `workers` workers.
pub async fn postgres(url: &str, workers: usize) -> Result<sqlx::PgPool> {
    let opts = sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|_| CliError::config("invalid PostgreSQL URL"))?;
    // One direct connection first: fails at once when the server is down
    // (the pool would retry until its acquire timeout).
    sqlx::Connection::close(
        sqlx::ConnectOptions::connect(&opts)
            .await
            .map_err(connect_err)?,
    )
    .await
    .map_err(connect_err)?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(workers + 2).unwrap_or(8))
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await
        .map_err(connect_err)
}

/// A MySQL/MariaDB pool. Job sessions read committed, so that claiming a
/// batch locks its rows and not the gaps around them.
pub async fn mysql(url: &str, workers: usize) -> Result<sqlx::MySqlPool> {
    let opts = sqlx::mysql::MySqlConnectOptions::from_str(url)
        .map_err(|_| CliError::config("invalid MySQL URL"))?;
    sqlx::Connection::close(
        sqlx::ConnectOptions::connect(&opts)
            .await
            .map_err(connect_err)?,
    )
    .await
    .map_err(connect_err)?;
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(u32::try_from(workers + 2).unwrap_or(8))
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(
                    conn,
                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                )
                .await
                .map(|_| ())
            })
        })
        .connect_with(opts)
        .await
        .map_err(connect_err)
}

/// A SQLite pool; `create` makes the file if missing (for `init`).
pub async fn sqlite(url: &str, create: bool) -> Result<sqlx::SqlitePool> {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|_| CliError::config("invalid SQLite URL"))?
        .create_if_missing(create)
        .busy_timeout(Duration::from_secs(60));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .map_err(connect_err)
}

/// Appends `SELECT`-list or `SET` identifiers.
pub fn ident<D: Backend>(name: &str) -> String {
    let mut s = String::new();
    D::push_ident(&mut s, name);
    s
}

/// A placeholder.
pub fn ph<D: Backend>(n: usize) -> String {
    let mut s = String::new();
    D::push_placeholder(&mut s, n);
    s
}

/// The `n`th placeholder for a text key (`rowseal_keys.tenant`, a text
/// tenant column) that must match a column byte for byte, whatever its
/// collation (see [`Backend::push_exact_text_placeholder`]). Never for a
/// tenant column of another type: see [`crate::registry::tenant_ph`].
pub fn exact_ph<D: Backend>(n: usize) -> String {
    let mut s = String::new();
    D::push_exact_text_placeholder(&mut s, n);
    s
}

/// Reads an integer column that may come back as any integer width.
pub fn read_i64<R: rowseal_sqlx::DbRow>(row: &R, idx: usize) -> Result<i64> {
    use rowseal_sqlx::SqlType;
    for t in [SqlType::I64, SqlType::I32] {
        match row.read_value(idx, t) {
            Ok(Value::I64(v)) => return Ok(v),
            Ok(Value::I32(v)) => return Ok(i64::from(v)),
            Ok(Value::Null(_)) => return Ok(0),
            _ => continue,
        }
    }
    Err(CliError::db(format!("column {idx}: expected an integer")))
}

/// Reads a text column (NULL as empty). Not for the tenant column of an
/// application table, which may be a UUID or an integer: see
/// [`crate::registry::read_tenant`].
pub fn read_text<R: rowseal_sqlx::DbRow>(row: &R, idx: usize) -> Result<String> {
    match row.read_value(idx, rowseal_sqlx::SqlType::Text) {
        Ok(Value::Text(s)) => Ok(s),
        Ok(Value::Null(_)) => Ok(String::new()),
        Ok(_) => Err(CliError::db(format!("column {idx}: expected text"))),
        Err(e) => {
            // MySQL returns some text (CAST AS CHAR of a binary column,
            // VARBINARY) as bytes.
            match row.read_value(idx, rowseal_sqlx::SqlType::Bytes) {
                Ok(Value::Bytes(b)) => String::from_utf8(b)
                    .map_err(|_| CliError::db(format!("column {idx}: not UTF-8"))),
                _ => Err(e.into()),
            }
        }
    }
}
