//! The `rowseal` command-line tool. See `docs/cli.md` and `rowseal --help`.

fn main() -> std::process::ExitCode {
    rowseal_cli::main()
}
