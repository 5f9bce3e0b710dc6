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

/// Checks a command line and a config file's text the way `rowseal` does
/// before it runs a command, and runs nothing: parses the flags (`args`, without
/// the program name; environment variables apply as usual), parses
/// `config_text` as the TOML config file (in place of reading the file named
/// by `--config`), merges and validates the settings, and checks the database
/// URL's scheme. Reads no file and contacts no database or key provider.
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
    let argv = std::iter::once(std::ffi::OsString::from("rowseal"))
        .chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    let jobs = match &cli.command {
        Command::Rotate { job_args, .. }
        | Command::Verify { job_args }
        | Command::Rewrap { job_args, .. } => Some(job_args.clone()),
        Command::DecryptColumn { batch_size, .. } => Some(cli::JobArgs {
            batch_size: *batch_size,
            workers: None,
            tables: Vec::new(),
            max_rows_per_second: None,
        }),
        _ => None,
    };
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
    let settings = config::Settings::merge(&cli.global, jobs.as_ref(), file)?;
    if let Some(url) = &settings.database_url {
        db::kind(url)?;
    }
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
