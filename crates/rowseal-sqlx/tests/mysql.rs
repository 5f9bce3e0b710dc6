#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on MariaDB/MySQL: a fresh database per test, dropped at the end.
//! `ROWSEAL_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).

mod suite;

use rowseal_test_support::db;
use suite::Ctx;

async fn setup() -> Option<Ctx<sqlx::MySql>> {
    Some(Ctx::new(db::mysql(4).await?).await)
}

all_cases!();
