//! A fresh database per test, dropped at the end: a uniquely named database
//! on PostgreSQL or MariaDB/MySQL, a temporary file on SQLite.
//!
//! Servers: `ROWSEAL_TEST_POSTGRES_URL` (default
//! `postgres://root@127.0.0.1:5432/test`), `ROWSEAL_TEST_POSTGRES_SOCKET`
//! (default `/var/run/postgresql`, for [`postgres_socket`]),
//! `ROWSEAL_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). An
//! unreachable server is [`unreachable`](crate::unreachable): `None` after a
//! loud skip message, or a panic under `CI=true`.
//!
//! The database goes away in [`TestDb::finish`] (closes the pool first), or,
//! if the test never got there (it failed), when the [`TestDb`] is dropped.
//!
//! Pools: `max_connections` as asked, a 60 s acquire timeout; SQLite
//! connections wait up to 60 s on a locked database.

use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::Database;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use sqlx::{ConnectOptions, Connection, Executor};

/// How long a pool waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// A database made for one test.
pub struct TestDb<DB: Database> {
    /// `"postgres"`, `"mysql"` or `"sqlite"`.
    pub kind: &'static str,
    /// Its URL (for the command-line tool or an application under test).
    pub url: String,
    /// A pool on it.
    pub pool: sqlx::Pool<DB>,
    // After `pool`: fields drop in order, so the pool goes first.
    guard: Guard,
}

impl<DB: Database> TestDb<DB> {
    /// Closes the pool and drops the database.
    pub async fn finish(mut self) {
        self.pool.close().await;
        if let Some(cleanup) = self.guard.0.take() {
            cleanup.run(false).await;
        }
    }
}

/// Drops the database when dropped, unless [`TestDb::finish`] already did.
struct Guard(Option<Cleanup>);

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(cleanup) = self.0.take() else {
            return;
        };
        #[cfg(feature = "sqlite")]
        if let Cleanup::Files(path) = &cleanup {
            // No server to talk to: no runtime needed.
            return remove_files(path);
        }
        // Dropped inside the test's runtime, maybe while it unwinds: drop
        // the database from a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(cleanup.run(true)))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("warning: could not drop a test database");
        }
    }
}

enum Cleanup {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::postgres::PgConnectOptions, String),
    #[cfg(feature = "mysql")]
    MySql(sqlx::mysql::MySqlConnectOptions, String),
    #[cfg(feature = "sqlite")]
    Files(std::path::PathBuf),
}

impl Cleanup {
    /// `bounded`: the test's pool may still hold connections (a failed
    /// test), so a lock wait must not hang the drop.
    async fn run(self, bounded: bool) {
        match self {
            // FORCE ends the sessions still open on it.
            #[cfg(feature = "postgres")]
            Cleanup::Postgres(admin, name) => {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = bounded;
                warn_if_failed(&name, run_admin(&admin, &[drop.as_str()]).await);
            }
            #[cfg(feature = "mysql")]
            Cleanup::MySql(admin, name) => {
                let drop = format!("DROP DATABASE IF EXISTS {name}");
                let mut stmts = vec![drop.as_str()];
                if bounded {
                    stmts.insert(0, "SET SESSION lock_wait_timeout = 10");
                }
                warn_if_failed(&name, run_admin(&admin, &stmts).await);
            }
            #[cfg(feature = "sqlite")]
            Cleanup::Files(path) => {
                let _ = bounded;
                remove_files(&path);
            }
        }
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn warn_if_failed(name: &str, result: Result<(), sqlx::Error>) {
    if let Err(e) = result {
        eprintln!("warning: could not drop the test database {name}: {e}");
    }
}

/// Removes an SQLite database file and its companions.
#[cfg(feature = "sqlite")]
fn remove_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// Runs `stmts` on a new connection with `admin`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn run_admin<O: ConnectOptions>(admin: &O, stmts: &[&str]) -> Result<(), sqlx::Error>
where
    O::Connection: Sized,
    for<'c> &'c mut O::Connection: Executor<'c>,
{
    let mut conn = admin.connect().await?;
    for s in stmts {
        conn.execute(*s).await?;
    }
    conn.close().await
}

fn pool_options<DB: Database>(max_connections: u32) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

/// Creates database `name` through `base` (`what` names the server in the
/// skip message), then a pool of `max_connections` on `on_db` (the same
/// server, database `name`); `cleanup` drops it again.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[allow(clippy::too_many_arguments)]
async fn on_server<DB: Database>(
    kind: &'static str,
    what: &str,
    base: &Options<DB>,
    name: &str,
    on_db: Options<DB>,
    url: String,
    cleanup: Cleanup,
    max_connections: u32,
) -> Option<TestDb<DB>>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            crate::unreachable(what, &e);
            return None;
        }
    };
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    admin.close().await.unwrap();
    // From here on the database is dropped whatever happens.
    let guard = Guard(Some(cleanup));
    let pool = pool_options(max_connections)
        .connect_with(on_db)
        .await
        .unwrap();
    Some(TestDb {
        kind,
        url,
        pool,
        guard,
    })
}

/// `base_url` with its database (the path) replaced by `name`; the query, if
/// any, is kept.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn url_with_database(base_url: &str, name: &str) -> String {
    let (head, query) = match base_url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base_url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let server = match head[authority_start..].find('/') {
        Some(i) => &head[..authority_start + i],
        None => head,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

/// A fresh PostgreSQL database at `ROWSEAL_TEST_POSTGRES_URL`, with a pool
/// of `max_connections`.
#[cfg(feature = "postgres")]
pub async fn postgres(max_connections: u32) -> Option<TestDb<sqlx::Postgres>> {
    use std::str::FromStr;
    let base_url = env_or(
        "ROWSEAL_TEST_POSTGRES_URL",
        "postgres://root@127.0.0.1:5432/test",
    );
    let base = sqlx::postgres::PgConnectOptions::from_str(&base_url).unwrap();
    let name = crate::random_name();
    let url = url_with_database(&base_url, &name);
    postgres_on(base, name, url, max_connections).await
}

/// A fresh PostgreSQL database through the unix socket in
/// `ROWSEAL_TEST_POSTGRES_SOCKET` (default `/var/run/postgresql`; user
/// `root`, admin database `test`), with a pool of `max_connections`. A
/// missing socket directory is [`unreachable`](crate::unreachable).
/// [`TestDb::url`] is a lossy rendering of the options.
#[cfg(feature = "postgres")]
pub async fn postgres_socket(max_connections: u32) -> Option<TestDb<sqlx::Postgres>> {
    let dir = env_or("ROWSEAL_TEST_POSTGRES_SOCKET", "/var/run/postgresql");
    if !std::path::Path::new(&dir).exists() {
        crate::unreachable("the PostgreSQL unix socket", &dir);
        return None;
    }
    let base = sqlx::postgres::PgConnectOptions::new()
        .socket(&dir)
        .username("root")
        .database("test");
    let name = crate::random_name();
    let url = base.clone().database(&name).to_url_lossy().to_string();
    postgres_on(base, name, url, max_connections).await
}

#[cfg(feature = "postgres")]
async fn postgres_on(
    base: sqlx::postgres::PgConnectOptions,
    name: String,
    url: String,
    max_connections: u32,
) -> Option<TestDb<sqlx::Postgres>> {
    let on_db = base.clone().database(&name);
    on_server(
        "postgres",
        "PostgreSQL",
        &base,
        &name,
        on_db,
        url,
        Cleanup::Postgres(base.clone(), name.clone()),
        max_connections,
    )
    .await
}

/// A fresh MariaDB/MySQL database at `ROWSEAL_TEST_MYSQL_URL`, with a pool of
/// `max_connections`.
#[cfg(feature = "mysql")]
pub async fn mysql(max_connections: u32) -> Option<TestDb<sqlx::MySql>> {
    use std::str::FromStr;
    let base_url = env_or("ROWSEAL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let base = sqlx::mysql::MySqlConnectOptions::from_str(&base_url).unwrap();
    let name = crate::random_name();
    let url = url_with_database(&base_url, &name);
    let on_db = base.clone().database(&name);
    on_server(
        "mysql",
        "MariaDB/MySQL",
        &base,
        &name,
        on_db,
        url,
        Cleanup::MySql(base.clone(), name.clone()),
        max_connections,
    )
    .await
}

/// A fresh SQLite database file in the temporary directory, with a pool of
/// `max_connections`.
#[cfg(feature = "sqlite")]
pub async fn sqlite(max_connections: u32) -> TestDb<sqlx::Sqlite> {
    sqlite_with(max_connections, |o| o).await
}

/// [`sqlite`], with the connect options passed through `tune` first (e.g.
/// `|o| o.journal_mode(SqliteJournalMode::Wal)`).
#[cfg(feature = "sqlite")]
pub async fn sqlite_with(
    max_connections: u32,
    tune: impl FnOnce(sqlx::sqlite::SqliteConnectOptions) -> sqlx::sqlite::SqliteConnectOptions,
) -> TestDb<sqlx::Sqlite> {
    use std::str::FromStr;
    let path = std::env::temp_dir().join(format!("{}.db", crate::random_name()));
    let url = format!("sqlite://{}", path.display());
    let guard = Guard(Some(Cleanup::Files(path)));
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(60));
    let pool = pool_options(max_connections)
        .connect_with(tune(opts))
        .await
        .unwrap();
    TestDb {
        kind: "sqlite",
        url,
        pool,
        guard,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn url_with_database() {
        use super::url_with_database as f;
        assert_eq!(
            f("postgres://root@127.0.0.1:5432/test", "x"),
            "postgres://root@127.0.0.1:5432/x"
        );
        assert_eq!(
            f("mysql://root@h:3306/test?ssl-mode=disabled", "x"),
            "mysql://root@h:3306/x?ssl-mode=disabled"
        );
        assert_eq!(f("postgres://root@h", "x"), "postgres://root@h/x");
    }
}
