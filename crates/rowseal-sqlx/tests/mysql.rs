#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The suite on MariaDB/MySQL: a fresh database per test, dropped at the end.
//! `ROWSEAL_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).

mod suite;

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection};
use suite::Ctx;

fn url() -> String {
    std::env::var("ROWSEAL_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

async fn setup() -> Option<Ctx<sqlx::MySql>> {
    let base = MySqlConnectOptions::from_str(&url()).unwrap();
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            suite::unreachable("MariaDB/MySQL", &e);
            return None;
        }
    };
    let name = suite::random_name();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let pool = MySqlPoolOptions::new()
        .max_connections(4)
        .connect_with(base.clone().database(&name))
        .await
        .unwrap();
    let teardown = Box::new(move || -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Ok(mut admin) = base.connect().await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut admin)
                    .await;
            }
        })
    });
    Some(Ctx::new(pool, teardown).await)
}

all_cases!();
