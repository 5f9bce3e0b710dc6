//! Offline query checking: sqlx's macros read the committed `.sqlx/` unless
//! `scripts/sqlx-prepare.sh` asks them to check against a database
//! (`SQLX_OFFLINE=false` with `DATABASE_URL`). The macros read these
//! variables inside rustc, which cargo does not track: declared here so that
//! a change (or a new `.sqlx/`) re-expands the queries.

fn main() {
    for variable in ["DATABASE_URL", "SQLX_OFFLINE", "SQLX_OFFLINE_DIR"] {
        println!("cargo:rerun-if-env-changed={variable}");
    }
    println!("cargo:rerun-if-changed=.sqlx");
    if std::env::var_os("SQLX_OFFLINE").is_none() {
        println!("cargo:rustc-env=SQLX_OFFLINE=true");
    }
    if std::env::var_os("SQLX_OFFLINE_DIR").is_none() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".sqlx");
        println!("cargo:rustc-env=SQLX_OFFLINE_DIR={}", dir.display());
    }
}
