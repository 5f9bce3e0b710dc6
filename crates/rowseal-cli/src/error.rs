//! Exit codes and the tool's error type. No error ever carries plaintext or
//! key bytes: core and sqlx-layer errors are safe to print by construction,
//! and database URLs are never echoed.

use std::fmt;

/// The process exit codes of `rowseal` (documented in `docs/cli.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// The command ran, and found or left rows that failed (for example
    /// `verify` found a row that does not decrypt, or `rotate` could not open
    /// some rows).
    Failures = 1,
    /// Invalid command line.
    Usage = 2,
    /// Invalid or missing configuration (database URL, key provider, config
    /// file).
    Config = 3,
    /// The database failed or could not be reached.
    Database = 4,
    /// The key provider (KMS, local keyring) failed or refused.
    KeyProvider = 5,
    /// Refused: a destructive command without its confirmation, or a job in a
    /// state that does not allow the request.
    Refused = 6,
    /// A bug or an unexpected condition in rowseal itself.
    Internal = 70,
}

/// An error that ends the command, with its exit code.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: ExitCode,
    /// What went wrong (never secrets).
    pub message: String,
}

impl CliError {
    /// An error with an exit code.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Config, message)
    }

    /// A database error.
    pub fn db(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Database, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<rowseal_core::Error> for CliError {
    fn from(e: rowseal_core::Error) -> Self {
        use rowseal_core::Error as E;
        let code = match &e {
            E::Provider(_) => ExitCode::KeyProvider,
            E::KeyConfig { .. } => ExitCode::Config,
            // sqlx errors name tables, columns and server messages; they
            // never hold bound values.
            E::Store { .. } | E::Database(_) => ExitCode::Database,
            _ => ExitCode::Failures,
        };
        CliError::new(code, e.to_string())
    }
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        // sqlx errors name tables, columns and server messages; they never
        // hold bound values.
        CliError::db(format!("database: {e}"))
    }
}

/// The result type of the tool.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
