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
mod scan;
mod write;

pub use cli::{Cli, Command};
pub use error::{CliError, ExitCode as Exit};
#[doc(hidden)]
pub use scan::__rotation_claim_query;

use clap::Parser;

/// Checks a command line and a config file's text the way `rowseal` does
/// before it runs a command, and runs nothing: parses the flags (`args`, without
/// the program name; environment variables apply as usual), parses
/// `config_text` as the TOML config file (in place of reading the file named
/// by `--config`), merges and validates the settings, and checks that a
/// database URL is set and has a supported scheme. Reads no file and contacts
/// no database or key provider. Apart from where the config file's text comes
/// from, this is the code `rowseal` runs before it connects.
///
/// Errors are the ones the tool would print, with their exit codes: `Usage`
/// for the command line, `Config` for the rest. Like every [`CliError`] they
/// never echo a database URL or its password. This is the entry point of the
/// config fuzz target (`fuzz/fuzz_targets/cli_config.rs`).
pub fn check_config<I, T>(args: I, config_text: Option<&str>) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = parse_args(args)?;
    let file = match config_text {
        Some(text) => {
            let path = cli
                .global
                .config
                .clone()
                .unwrap_or_else(|| "rowseal.toml".into());
            config::FileConfig::parse(&path, text)?
        }
        None => config::FileConfig::default(),
    };
    preflight(&cli, file)
}

/// Like [`check_config`], but reads the config file named by `--config` (or
/// `ROWSEAL_CONFIG`) from disk, as `rowseal` does: the tool's own checks
/// before it connects, for the tests that hold [`check_config`] to them.
#[doc(hidden)]
pub fn check_command_line<I, T>(args: I) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = parse_args(args)?;
    let file = config::FileConfig::read(cli.global.config.as_deref())?;
    preflight(&cli, file)
}

/// Parses `args` (without the program name) as `rowseal`'s command line.
fn parse_args<I, T>(args: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("rowseal"))
        .chain(args.into_iter().map(Into::into));
    Cli::try_parse_from(argv).map_err(|e| CliError::new(Exit::Usage, e.to_string()))
}

/// What `cmd::run` checks before it connects: the settings (flags and
/// environment over the config file), then the database URL.
fn preflight(cli: &Cli, file: config::FileConfig) -> Result<(), CliError> {
    config::Settings::of(cli, file)?.database()?;
    Ok(())
}

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
