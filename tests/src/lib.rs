//! End-to-end reliability and security checks for rowseal.
//!
//! The checks are this crate's integration tests (`tests/tests/*.rs`): the
//! fault matrix, the soak test and the leak check, run against real
//! PostgreSQL, MariaDB, SQLite and a KMS-compatible server. This library holds
//! only what they share.
