#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on SQLite (a temporary database file per test, in WAL mode).

mod suite;

use rowseal_test_support::db;
use sqlx::sqlite::SqliteJournalMode;
use suite::Ctx;

async fn setup() -> Option<Ctx<sqlx::Sqlite>> {
    let db = db::sqlite_with(4, |o| o.journal_mode(SqliteJournalMode::Wal)).await;
    Some(Ctx::new(db).await)
}

all_cases!();
