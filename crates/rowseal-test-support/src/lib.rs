//! Shared set-up for rowseal's tests and benches (a dev-dependency, never
//! published).
//!
//! - [`db`] (features `postgres`, `mysql`, `sqlite`): a fresh database per
//!   test on each server, dropped at the end;
//! - [`explain`] (feature `explain`): query plans, to assert that a
//!   statement uses an index;
//! - [`kms`] (feature `kms`): the KMS test server (moto, started by
//!   `scripts/with-kms-server.sh`), an admin client and keys;
//! - [`proxy`] (feature `proxy`, part of `kms`): a fault-injecting HTTP
//!   proxy to put between a provider and its test server;
//! - [`vault`] (feature `vault`): OpenBao servers for the Transit
//!   provider's tests (the `bao` binary from `scripts/with-vault-server.sh`);
//! - [`tls_postgres`]: a PostgreSQL cluster of the test's own with
//!   `ssl = on` and a throw-away certificate authority;
//! - [`unreachable`]: THE rule for a missing service: a loud skip locally, a
//!   failure under `CI=true`.
//!
//! Only for integration tests (`tests/*.rs`) and benches: a crate's own
//! `#[cfg(test)]` unit tests must not use it (it links the crate's normal
//! build, not its test build).

// Test support: a failed set-up step is a failed test, reported with its
// cause, so unwrapping and panicking are what these helpers are for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod db;
#[cfg(feature = "explain")]
pub mod explain;
#[cfg(feature = "kms")]
pub mod kms;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod tls_postgres;
#[cfg(feature = "vault")]
pub mod vault;

/// Whether this is a CI run (`CI=true`): then every service is required.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A required service is unreachable: panics under `CI=true`, else prints a
/// loud skip message (the caller then skips, i.e. returns).
pub fn unreachable(what: &str, err: &dyn std::fmt::Display) {
    if ci() {
        panic!("{what} is unreachable under CI=true: {err}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: {what} is unreachable ({err}); set CI=true to make this a failure !!!!!!!!\n"
    );
}

/// A random name for one test's database, file or directory
/// (`rowseal_test_` and 16 hex digits: a valid SQL identifier as it is).
pub fn random_name() -> String {
    format!("rowseal_test_{:016x}", rand::random::<u64>())
}
