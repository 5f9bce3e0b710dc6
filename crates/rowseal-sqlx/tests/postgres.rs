#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on PostgreSQL: a fresh database per test, dropped at the end.
//! `ROWSEAL_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`).

mod suite;

use rowseal_test_support::db;
use suite::Ctx;

async fn setup() -> Option<Ctx<sqlx::Postgres>> {
    Some(Ctx::new(db::postgres(4).await?).await)
}

all_cases!();

/// The same round trip through the unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_round_trip() {
    let Some(db) = db::postgres_socket(4).await else {
        return;
    };
    let cx = Ctx::new(db).await;
    suite::crud(&cx).await;
    suite::all_types_round_trip(&cx).await;
    cx.finish().await;
}
