#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on SQLite (a temporary database file per test).

mod suite;

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use suite::Ctx;

async fn setup() -> Option<Ctx<sqlx::Sqlite>> {
    let path = std::env::temp_dir().join(format!("{}.db", suite::random_name()));
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap();
    let teardown = Box::new(move || -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        })
    });
    Some(Ctx::new(pool, teardown).await)
}

all_cases!();
