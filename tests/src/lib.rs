//! End-to-end reliability and security checks for rowseal.
//!
//! The checks are this crate's integration tests (`tests/tests/*.rs`): the
//! fault matrix, the soak test and the leak check, run against real
//! PostgreSQL, MariaDB, SQLite and a KMS-compatible server. What they share
//! comes from rowseal-test-support, re-exported here:
//! - [`db`]: a fresh database per test on each server, dropped at the end;
//! - [`kms`]: the KMS test server (moto, started by
//!   `scripts/with-kms-server.sh`), an admin client, and the builder of the
//!   provider under test (this crate's own settings);
//! - [`proxy`]: a fault-injecting HTTP proxy to put between the KMS provider
//!   and the server;
//! - [`unreachable`]: a missing service is a loud skip locally and a failure
//!   under `CI=true`.
//!
//! The package also builds `e2e-rowseal`, the `rowseal` command-line tool, so
//! that the checks can run it as a subprocess
//! (`env!("CARGO_BIN_EXE_e2e-rowseal")`).

pub mod kms;

pub use rowseal_test_support::{db, proxy, random_name, unreachable};
