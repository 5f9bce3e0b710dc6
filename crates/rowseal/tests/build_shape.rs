#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What a service gets when it depends on `rowseal`: the declared
//! `rust-version` holds for every feature (no locked dependency needs a newer
//! Rust), and the features pull in only the databases they name, as sqlx's
//! do. Read from `cargo metadata` and `cargo tree` on the lock file, so that
//! a `cargo update` that raises a dependency's floor fails here, not on a
//! user's older toolchain (only one toolchain can be installed here).

use std::process::Command;

fn cargo(args: &[&str]) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// `1.94.1` as (1, 94, 1); `1.80` as (1, 80, 0).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().expect("a number"));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn rust_version_is_at_least_every_locked_dependencys() {
    let meta: serde_json::Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--locked"])).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let declared = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["rust_version"].as_str())
            .unwrap_or_else(|| panic!("{name} declares no rust-version"))
            .to_owned()
    };
    let ours = declared("rowseal");
    let too_new: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let rv = p["rust_version"].as_str()?;
            (version(rv) > version(&ours))
                .then(|| format!("{} {} needs {rv}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "rowseal declares rust-version {ours}, but: {too_new:?}"
    );
    // Every member of the workspace declares the same floor.
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    for p in packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id)))
    {
        assert_eq!(
            p["rust_version"].as_str(),
            Some(ours.as_str()),
            "{} declares another rust-version",
            p["name"]
        );
    }
}

/// The crate names in `rowseal`'s dependency tree with `features`.
fn tree(features: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "tree",
        "--locked",
        "-p",
        "rowseal",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ];
    if let Some(f) = features {
        args.extend(["--no-default-features", "--features", f]);
    }
    cargo(&args)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn features_pull_in_only_the_databases_they_name() {
    let has = |t: &[String], krate: &str| t.iter().any(|c| c == krate);
    let default = tree(None);
    for db in [
        "sqlx-sqlite",
        "sqlx-postgres",
        "sqlx-mysql",
        "libsqlite3-sys",
    ] {
        assert!(!has(&default, db), "the default features build {db}");
    }
    let postgres = tree(Some("postgres,derive"));
    assert!(has(&postgres, "sqlx-postgres"));
    for db in ["sqlx-sqlite", "libsqlite3-sys", "sqlx-mysql"] {
        assert!(!has(&postgres, db), "a PostgreSQL service builds {db}");
    }
    let sqlite = tree(Some("sqlite,derive"));
    assert!(has(&sqlite, "libsqlite3-sys"));
    let rustls = tree(Some("postgres,tls-rustls"));
    assert!(has(&rustls, "rustls"), "tls-rustls reaches sqlx");
    assert!(!has(&postgres, "rustls"), "TLS only when asked for");
}
