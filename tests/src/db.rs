//! A fresh database per test on PostgreSQL, MariaDB/MySQL or SQLite, dropped
//! by [`TestDb::finish`].
//!
//! Servers: `ROWSEAL_TEST_POSTGRES_URL` (default
//! `postgres://root@127.0.0.1:5432/test`), `ROWSEAL_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`). An unreachable server is
//! [`unreachable`](crate::unreachable): a skip, or a failure under `CI=true`.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use rowseal::sqlx::{self, ConnectOptions, Connection};

type Teardown = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A database made for one test.
pub struct TestDb<DB: sqlx::Database> {
    /// `"postgres"`, `"mysql"` or `"sqlite"`.
    pub kind: &'static str,
    /// Its URL (for the command-line tool).
    pub url: String,
    /// A pool on it.
    pub pool: sqlx::Pool<DB>,
    teardown: Option<Teardown>,
}

impl<DB: sqlx::Database> TestDb<DB> {
    /// Closes the pool and drops the database.
    pub async fn finish(mut self) {
        self.pool.close().await;
        if let Some(t) = self.teardown.take() {
            t().await;
        }
    }
}

fn url_with_database(base_url: &str, name: &str) -> String {
    let without = base_url
        .split('?')
        .next()
        .unwrap_or(base_url)
        .rsplit_once('/')
        .map_or(base_url, |(a, _)| a);
    format!("{without}/{name}")
}

/// A fresh PostgreSQL database with a pool of `max_connections`.
pub async fn postgres(max_connections: u32) -> Option<TestDb<sqlx::Postgres>> {
    let base_url = std::env::var("ROWSEAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let base = sqlx::postgres::PgConnectOptions::from_str(&base_url).unwrap();
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            crate::unreachable("PostgreSQL", &e);
            return None;
        }
    };
    let name = crate::random_name();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(base.clone().database(&name))
        .await
        .unwrap();
    let url = url_with_database(&base_url, &name);
    let teardown: Teardown = Box::new(move || {
        Box::pin(async move {
            if let Ok(mut admin) = base.connect().await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        })
    });
    Some(TestDb {
        kind: "postgres",
        url,
        pool,
        teardown: Some(teardown),
    })
}

/// A fresh MariaDB/MySQL database with a pool of `max_connections`.
pub async fn mysql(max_connections: u32) -> Option<TestDb<sqlx::MySql>> {
    let base_url = std::env::var("ROWSEAL_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let base = sqlx::mysql::MySqlConnectOptions::from_str(&base_url).unwrap();
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            crate::unreachable("MariaDB/MySQL", &e);
            return None;
        }
    };
    let name = crate::random_name();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(base.clone().database(&name))
        .await
        .unwrap();
    let url = url_with_database(&base_url, &name);
    let teardown: Teardown = Box::new(move || {
        Box::pin(async move {
            if let Ok(mut admin) = base.connect().await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut admin)
                    .await;
            }
        })
    });
    Some(TestDb {
        kind: "mysql",
        url,
        pool,
        teardown: Some(teardown),
    })
}

/// A fresh SQLite database file in the temporary directory (removed by
/// [`TestDb::finish`]).
pub async fn sqlite(max_connections: u32) -> TestDb<sqlx::Sqlite> {
    let path = std::env::temp_dir().join(format!("{}.db", crate::random_name()));
    let url = format!("sqlite://{}", path.display());
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(60));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(opts)
        .await
        .unwrap();
    let teardown: Teardown = Box::new(move || {
        Box::pin(async move {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        })
    });
    TestDb {
        kind: "sqlite",
        url,
        pool,
        teardown: Some(teardown),
    }
}
