#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on PostgreSQL: a fresh database per test, dropped at the end.
//! `ROWSEAL_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`).

mod suite;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use suite::Ctx;

fn url() -> String {
    std::env::var("ROWSEAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

async fn setup_with(base: PgConnectOptions) -> Option<Ctx<sqlx::Postgres>> {
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            suite::unreachable("PostgreSQL", &e);
            return None;
        }
    };
    let name = suite::random_name();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(base.clone().database(&name))
        .await
        .unwrap();
    let teardown = Box::new(move || -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Ok(mut admin) = base.connect().await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        })
    });
    Some(Ctx::new(pool, teardown).await)
}

async fn setup() -> Option<Ctx<sqlx::Postgres>> {
    setup_with(PgConnectOptions::from_str(&url()).unwrap()).await
}

all_cases!();

/// The same round trip through the unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_round_trip() {
    let dir = std::env::var("ROWSEAL_TEST_POSTGRES_SOCKET")
        .unwrap_or_else(|_| "/var/run/postgresql".into());
    if !std::path::Path::new(&dir).exists() {
        suite::unreachable("the PostgreSQL unix socket", &dir);
        return;
    }
    let opts = PgConnectOptions::new()
        .socket(&dir)
        .username("root")
        .database("test");
    let Some(cx) = setup_with(opts).await else {
        return;
    };
    suite::crud(&cx).await;
    suite::all_types_round_trip(&cx).await;
    cx.finish().await;
}
