//! rowseal's own tables (`rowseal_keys`, `rowseal_schema`, `rowseal_jobs`),
//! migrated: [`run`] applies rowseal's numbered migrations that a database
//! has not had yet, and records them in a table of its own,
//! [`TABLE`] (`rowseal_migrations`).
//!
//! Your own migrations stay yours: `sqlx::migrate!` keeps its history in
//! `_sqlx_migrations`, which rowseal never reads or writes, and rowseal's
//! tables neither reference yours nor are referenced by them, so the two
//! histories are independent and the order in which an application runs them
//! does not matter:
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn start(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! // sqlx::migrate!("./migrations").run(&pool).await?; // the application's tables
//! rowseal_sqlx::migrate::run(&pool).await?; // rowseal's (an empty list when up to date)
//! # Ok(()) }
//! ```
//!
//! - **Idempotent and concurrent.** Applying a migration and recording it
//!   happen under a lock, so that several processes starting at once apply
//!   each migration exactly once and all succeed: a transaction-scoped
//!   advisory lock on PostgreSQL (`pg_advisory_xact_lock`: released with the
//!   transaction, whatever happens, and usable behind a pooler in
//!   transaction mode), `GET_LOCK` on MySQL/MariaDB (named after the
//!   database), the write lock on SQLite (`BEGIN IMMEDIATE`). On
//!   PostgreSQL and SQLite all of a run is one transaction: a failed
//!   migration leaves nothing behind. MySQL commits each DDL statement
//!   itself, so there a migration is recorded after it succeeded, and one
//!   interrupted half-way is applied again, whole, by the next run.
//! - **A newer database is refused.** A database that records a version
//!   this rowseal does not know was migrated by a newer rowseal: [`run`]
//!   fails ([`ErrorKind::Configuration`](crate::ErrorKind::Configuration))
//!   before changing anything, rather than running an older rowseal against
//!   tables it does not know.
//! - **Databases from before the migrator are adopted.** Tables made by
//!   [`crate::schema::install`], by the command-line tool's `rowseal init`
//!   of earlier versions, or by the file `migrations/<database>/20240101000000_rowseal.sql`
//!   copied into an application's own migrations have no bookkeeping row:
//!   every migration is written to be applied again to any table an earlier
//!   rowseal made (`CREATE TABLE IF NOT EXISTS`, a column brought to its
//!   current definition), so [`run`] applies them all and records them.
//!   Migrations added later keep that rule.
//! - **Upgrades are migrations.** A change to rowseal's tables is a new
//!   numbered file in `migrations/<database>/` (`NNNN_description.sql`),
//!   listed here; a released one is never edited (a test pins their
//!   content). Version numbers are shared by the three databases, and a
//!   database with nothing to change for a version has no file for it:
//!   version 2 makes `rowseal_keys.tenant` compare bytes on MySQL/MariaDB,
//!   where rowseal's first tables compared it under the database's
//!   (case-insensitive) collation.
//!
//! **One migration history instead.** An application that wants rowseal's
//! tables in its own `sqlx::migrate!` history copies [`migrations`] into its
//! migrations folder, each under a version of its own (the time it adds it),
//! and copies the new ones when it upgrades rowseal:
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # fn copy() -> std::io::Result<()> {
//! let now = 20261201120000_i64; // when you add them: after your own migrations
//! for m in rowseal_sqlx::migrate::migrations::<sqlx::Postgres>() {
//!     let file = format!("migrations/{}_rowseal_{}.sql", now + m.version, m.description);
//!     std::fs::write(file, m.sql)?;
//! }
//! # Ok(()) }
//! ```
//!
//! (`run` on such a database adopts it like any other.)
//!
//! On MySQL/MariaDB, give [`run`] a pool or a connection, not a
//! transaction: the DDL commits it. Cancelling [`run`] on MySQL/MariaDB (a
//! dropped future) between its lock and its release leaves the lock with the
//! connection until the connection closes.

use crate::backend::{Backend, DbRow};
use crate::error::{Error, Result};
use crate::value::{SqlType, Value};

/// The table in which [`run`] records the migrations it applied: `version`
/// (the primary key), `description`, `installed_by` (the rowseal version
/// that applied it) and `installed_at`.
pub const TABLE: &str = "rowseal_migrations";

/// One of rowseal's migrations: the file `migrations/<database>/NNNN_<description>.sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// Its number, from 1, shared by the three databases.
    pub version: i64,
    /// What it does, as in its file name.
    pub description: &'static str,
    /// Its SQL: statements separated by `;`, with `--` comments.
    pub sql: &'static str,
}

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        description: "tables",
        sql: include_str!("../../../migrations/postgres/0001_tables.sql"),
    },
    Migration {
        version: 3,
        description: "key_health",
        sql: include_str!("../../../migrations/postgres/0003_key_health.sql"),
    },
];

pub(crate) const MYSQL: &[Migration] = &[
    Migration {
        version: 1,
        description: "tables",
        sql: include_str!("../../../migrations/mysql/0001_tables.sql"),
    },
    Migration {
        version: 2,
        description: "keys_tenant_bytes",
        sql: include_str!("../../../migrations/mysql/0002_keys_tenant_bytes.sql"),
    },
    Migration {
        version: 3,
        description: "key_health",
        sql: include_str!("../../../migrations/mysql/0003_key_health.sql"),
    },
];

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        description: "tables",
        sql: include_str!("../../../migrations/sqlite/0001_tables.sql"),
    },
    Migration {
        version: 3,
        description: "key_health",
        sql: include_str!("../../../migrations/sqlite/0003_key_health.sql"),
    },
];

/// rowseal's migrations for `DB`, oldest first.
pub fn migrations<DB: Backend>() -> &'static [Migration] {
    of_dialect(DB::DIALECT)
}

/// The version a database of `DB` is at once [`run`] has run.
pub fn latest<DB: Backend>() -> i64 {
    migrations::<DB>().last().map_or(0, |m| m.version)
}

fn of_dialect(dialect: &str) -> &'static [Migration] {
    match dialect {
        "postgres" => POSTGRES,
        "mysql" => MYSQL,
        _ => SQLITE,
    }
}

/// Applies the migrations the database has not had, under the migration
/// lock, and records them in [`TABLE`]; returns their versions (empty when
/// the database was up to date). Refuses a database that records a version
/// this rowseal does not know (migrated by a newer rowseal). See the
/// [module](self).
pub async fn run<'a, A>(conn: A) -> Result<Vec<i64>>
where
    A: sqlx::Acquire<'a>,
    A::Database: Backend,
{
    let mut conn = conn.acquire().await?;
    run_on::<A::Database>(&mut conn).await
}

/// The PostgreSQL advisory lock's key ("rowseal" in ASCII): advisory locks
/// are per database, so one key serves every database of a server.
const PG_LOCK: i64 = 0x0072_6f77_7365_616c;

/// The MySQL/MariaDB lock's name: `GET_LOCK` names are server-wide, so it
/// holds the database's (hashed: names are at most 64 characters).
const MYSQL_LOCK: &str = "CONCAT('rowseal_migrate_', MD5(COALESCE(DATABASE(), '')))";

async fn run_on<DB: Backend>(conn: &mut DB::Connection) -> Result<Vec<i64>> {
    use sqlx::Connection as _;
    match DB::DIALECT {
        "mysql" => {
            // Waits for another process's run (a year: as long as the lock
            // on PostgreSQL and the `-1` sqlx means, which MariaDB refuses).
            let got = DB::fetch_optional_on(
                conn,
                &format!("SELECT CAST(GET_LOCK({MYSQL_LOCK}, 31536000) AS SIGNED)"),
                Vec::new(),
            )
            .await?;
            let got = got.map(|row| row.read_value(0, SqlType::I64)).transpose()?;
            if got != Some(Value::I64(1)) {
                return Err(refused(
                    "GET_LOCK did not give the migration lock".to_owned(),
                ));
            }
            let applied = apply::<DB>(conn).await;
            let released = DB::fetch_optional_on(
                conn,
                &format!("SELECT RELEASE_LOCK({MYSQL_LOCK})"),
                Vec::new(),
            )
            .await;
            let applied = applied?;
            released?;
            Ok(applied)
        }
        dialect => {
            // SQLite: the write lock from the start, so that a second run
            // waits before it reads what the first one recorded.
            // PostgreSQL: READ COMMITTED whatever the server's default, so
            // that the statements after the advisory lock see what a run
            // that held it before committed.
            let postgres = dialect == "postgres";
            let mut tx = if conn.is_in_transaction() {
                conn.begin().await?
            } else if postgres {
                conn.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await?
            } else {
                conn.begin_with("BEGIN IMMEDIATE").await?
            };
            match lock_and_apply::<DB>(&mut tx, postgres).await {
                Ok(applied) => {
                    tx.commit().await?;
                    Ok(applied)
                }
                Err(e) => {
                    // Now, not when the connection is next used: the
                    // transaction holds the advisory lock.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        }
    }
}

async fn lock_and_apply<DB: Backend>(
    conn: &mut DB::Connection,
    postgres: bool,
) -> Result<Vec<i64>> {
    if postgres {
        DB::execute_on(
            conn,
            &format!("SELECT pg_advisory_xact_lock({PG_LOCK})"),
            Vec::new(),
        )
        .await?;
    }
    apply::<DB>(conn).await
}

/// The body of a run, under the lock.
async fn apply<DB: Backend>(conn: &mut DB::Connection) -> Result<Vec<i64>> {
    let timestamp = match DB::DIALECT {
        "postgres" => "TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP",
        "mysql" => "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
        _ => "DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP",
    };
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (\
         version BIGINT NOT NULL PRIMARY KEY, \
         description VARCHAR(255) NOT NULL, \
         installed_by VARCHAR(64) NOT NULL, \
         installed_at {timestamp})"
    );
    DB::execute_on(conn, &ddl, Vec::new()).await?;

    let known = migrations::<DB>();
    let rows = DB::__fetch_all_on(
        conn,
        &format!("SELECT version, installed_by FROM {TABLE} ORDER BY version"),
        Vec::new(),
    )
    .await?;
    let mut recorded = Vec::with_capacity(rows.len());
    for row in &rows {
        let version = match row.read_value(0, SqlType::I64)? {
            Value::I64(v) if known.iter().any(|m| m.version == v) => v,
            other => {
                let version = match other {
                    Value::I64(v) => v.to_string(),
                    _ => "NULL".to_owned(),
                };
                let by = row.read_str(1).unwrap_or("?");
                return Err(refused(format!(
                    "the database records rowseal migration {version}, applied by rowseal {by}, \
                     which this rowseal ({}) does not know (it knows 1 to {}): it was migrated \
                     by a newer rowseal; run that version or a later one",
                    env!("CARGO_PKG_VERSION"),
                    latest::<DB>(),
                )));
            }
        };
        recorded.push(version);
    }

    let mut insert = format!("INSERT INTO {TABLE} (version, description, installed_by) VALUES (");
    for n in 1..=3 {
        if n > 1 {
            insert.push_str(", ");
        }
        DB::push_placeholder(&mut insert, n);
    }
    insert.push(')');
    let mut applied = Vec::new();
    for m in known.iter().filter(|m| !recorded.contains(&m.version)) {
        for statement in statements(m.sql) {
            DB::execute_on(conn, &statement, Vec::new()).await?;
        }
        DB::execute_on(
            conn,
            &insert,
            vec![
                Value::I64(m.version),
                Value::Text(m.description.to_owned()),
                Value::Text(env!("CARGO_PKG_VERSION").to_owned()),
            ],
        )
        .await?;
        applied.push(m.version);
    }
    Ok(applied)
}

/// The one error this module makes itself: the database is not one this
/// rowseal can migrate (a newer rowseal's, or its lock cannot be taken).
fn refused(reason: String) -> Error {
    Error::Schema {
        table: TABLE.to_owned(),
        column: "version".to_owned(),
        reason,
    }
}

/// A migration's statements: `--` comments removed, split at `;` (rowseal's
/// own files have neither inside a string).
fn statements(sql: &str) -> Vec<String> {
    let body: Vec<&str> = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect();
    body.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const DIALECTS: [&str; 3] = ["postgres", "mysql", "sqlite"];

    /// Each database's list is `migrations/<database>/` exactly: every file
    /// listed, under the version and description of its name, in order.
    #[test]
    fn lists_match_the_files() {
        for dialect in DIALECTS {
            let dir = format!("{}/../../migrations/{dialect}", env!("CARGO_MANIFEST_DIR"));
            let mut files: Vec<(i64, String)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .map(|name| {
                    let stem = name
                        .strip_suffix(".sql")
                        .unwrap_or_else(|| panic!("{name}"));
                    let (n, description) = stem.split_once('_').unwrap();
                    assert_eq!(n.len(), 4, "{dir}/{name}: NNNN_description.sql");
                    (n.parse().unwrap(), description.to_owned())
                })
                .collect();
            files.sort();
            let listed: Vec<(i64, String)> = of_dialect(dialect)
                .iter()
                .map(|m| (m.version, m.description.to_owned()))
                .collect();
            assert_eq!(listed, files, "{dir}");
            assert!(listed.windows(2).all(|w| w[0].0 < w[1].0));
            assert_eq!(listed.first().map(|m| m.0), Some(1));
        }
    }

    /// Released migrations are never edited (a database that ran the old
    /// text would not get the new one): a change is a new file. FNV-1a of
    /// each file, pinned.
    #[test]
    fn released_migrations_are_unchanged() {
        fn fnv1a(s: &str) -> u64 {
            s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        }
        let pinned: &[(&str, i64, u64)] = &[
            ("postgres", 1, 0x9319_c20d_8d5c_7005),
            ("mysql", 1, 0x923e_2f4c_19d3_5ac6),
            ("mysql", 2, 0xf29c_1938_c91a_def2),
            ("sqlite", 1, 0xe5db_143a_2699_fbb0),
        ];
        for (dialect, version, hash) in pinned {
            let m = of_dialect(dialect)
                .iter()
                .find(|m| m.version == *version)
                .unwrap();
            assert_eq!(
                fnv1a(m.sql),
                *hash,
                "{dialect} migration {version} changed: released migrations are frozen, add a new one"
            );
        }
    }

    #[test]
    fn statements_drop_comments() {
        let s =
            statements("-- a; comment\nCREATE TABLE t (a INT); -- x\n\nALTER TABLE t ADD b INT;\n");
        assert_eq!(s, vec!["CREATE TABLE t (a INT)", "ALTER TABLE t ADD b INT"]);
        for dialect in DIALECTS {
            for m in of_dialect(dialect) {
                assert!(!statements(m.sql).is_empty(), "{dialect} {}", m.version);
            }
        }
    }
}
