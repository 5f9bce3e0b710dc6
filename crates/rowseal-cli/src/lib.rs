//! The `rowseal` command-line tool, as a library so that its pieces can be
//! tested; the binary is `src/main.rs`. See `docs/cli.md` for the user guide.
//!
//! The tool works from the schema registry (`rowseal_schema`) in the database,
//! so it needs no application code: every job is type-agnostic (it opens each
//! encrypted column's envelope with the old row key and seals the same bytes
//! under a new one).

mod cli;
mod cmd;
mod config;
mod db;
mod error;
mod jobs;
mod output;
mod provider;
mod registry;

pub use cli::{Cli, Command};
pub use error::{CliError, ExitCode as Exit};

use clap::Parser;

/// Parses the command line, runs the command, and returns the process exit
/// code (see [`Exit`] and `docs/cli.md`).
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => Exit::Usage as u8,
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rowseal: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(Exit::Internal as u8);
        }
    };
    let code = runtime.block_on(cmd::run(cli));
    std::process::ExitCode::from(code as u8)
}
