//! End-to-end reliability and security checks for rowseal.
//!
//! The checks are this crate's integration tests (`tests/tests/*.rs`): the
//! fault matrix, the soak test and the leak check, run against real
//! PostgreSQL, MariaDB, SQLite and a KMS-compatible server. This library holds
//! only what they share:
//! - [`db`]: a fresh database per test on each server, dropped at the end;
//! - [`kms`]: the KMS test server (moto, started by
//!   `scripts/with-kms-server.sh`), an admin client and provider builders;
//! - [`proxy`]: a fault-injecting HTTP proxy to put between the KMS provider
//!   and the server;
//! - [`unreachable`]: a missing service is a loud skip locally and a failure
//!   under `CI=true`.
//!
//! The package also builds `e2e-rowseal`, the `rowseal` command-line tool, so
//! that the checks can run it as a subprocess
//! (`env!("CARGO_BIN_EXE_e2e-rowseal")`).

// Test support: a failed set-up step is a failed test, reported with its
// cause, so unwrapping and panicking are what these helpers are for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod db;
pub mod kms;
#[path = "../../crates/rowseal-kms/tests/common/proxy.rs"]
pub mod proxy;

/// A required service is unreachable: panics under `CI=true`, else prints a
/// loud skip message (the caller then returns).
pub fn unreachable(what: &str, err: &dyn std::fmt::Display) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is unreachable under CI=true: {err}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: {what} is unreachable ({err}); set CI=true to make this a failure !!!!!!!!\n"
    );
}

/// A random database (or file) name for one test.
pub fn random_name() -> String {
    format!("rowseal_e2e_{:016x}", rand::random::<u64>())
}
