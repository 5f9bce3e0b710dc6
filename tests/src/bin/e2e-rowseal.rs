//! The `rowseal` command-line tool, built inside the rowseal-e2e package so
//! that its integration tests can run it as a subprocess
//! (`env!("CARGO_BIN_EXE_e2e-rowseal")`): the same code as the `rowseal`
//! binary of rowseal-cli (`rowseal_cli::main`), always built from the current
//! tree.

fn main() -> std::process::ExitCode {
    rowseal_cli::main()
}
