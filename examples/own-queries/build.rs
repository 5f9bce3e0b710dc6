//! Offline query checking: sqlx's macros read the committed `.sqlx/` unless
//! `scripts/sqlx-prepare.sh` asks them to check against a database
//! (`SQLX_OFFLINE=false` with `DATABASE_URL`). The macros read these
//! variables inside rustc, which cargo does not track: declared here so that
//! a change (or a new `.sqlx/`) re-expands the queries. Shared by
//! examples/web (its `build` key points here).

fn main() {
    for variable in ["DATABASE_URL", "SQLX_OFFLINE", "SQLX_OFFLINE_DIR"] {
        println!("cargo:rerun-if-env-changed={variable}");
    }
    println!("cargo:rerun-if-changed=.sqlx");
    // `sqlx::migrate!` (examples/web) embeds the files of its folder: a new
    // one must rebuild the crate (stable Rust cannot tell the macro's
    // expansion to watch a folder).
    if std::path::Path::new("migrations").is_dir() {
        println!("cargo:rerun-if-changed=migrations");
    }
    if std::env::var_os("SQLX_OFFLINE").is_none() {
        println!("cargo:rustc-env=SQLX_OFFLINE=true");
    }
    if std::env::var_os("SQLX_OFFLINE_DIR").is_none() {
        // The crate being built (examples/web uses this script too).
        let root = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
        let dir = std::path::Path::new(&root).join(".sqlx");
        println!("cargo:rustc-env=SQLX_OFFLINE_DIR={}", dir.display());
    }
}
