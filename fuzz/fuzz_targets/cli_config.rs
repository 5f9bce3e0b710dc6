//! The command-line tool's configuration: flags (clap) and the TOML config
//! file, merged and validated by `rowseal_cli::check_config` exactly as
//! `rowseal` does before running a command.
//! - arbitrary flags and arbitrary config text never panic; errors are typed
//!   (exit code Usage or Config);
//! - a database password, given in the config file's `database_url` or in
//!   `--database-url`, never appears in an error, whatever else the input
//!   holds (unknown keys, wrong types, duplicate keys, broken TOML, bad
//!   flags);
//! - a database URL under the wrong key, or swallowed by a multi-line string
//!   given to another key, is not quoted by the error (it was, through toml's
//!   `invalid type: string "postgres://..."` message);
//! - a well-formed config (known keys, values in range) is accepted, and one
//!   value out of range is rejected with the Config exit code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rowseal_cli::{check_config, CliError, Exit};
use rowseal_fuzz::inputs::{CliConfigInput as Input, Cmd};

/// The password planted in every database URL.
const PASSWORD: &str = "pw-SECRET-9f2c1e";

fn url() -> String {
    format!("postgres://rowseal:{PASSWORD}@db.internal:5432/app")
}

fn assert_clean(e: &CliError) {
    assert!(
        matches!(e.code, Exit::Usage | Exit::Config),
        "unexpected exit code {:?}: {}",
        e.code,
        e.message
    );
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(
            !text.contains(PASSWORD),
            "the error echoes the password: {text}"
        );
    }
}

fuzz_target!(|input: Input| {
    if let Some((cmd, batch, workers, rate, bad)) = input.valid {
        // batch in 1..=10000 and workers in 1..=64 are valid; `bad` pushes
        // workers out of range. The file's values are checked whatever the
        // command.
        let batch = 1 + u32::from(batch) % 10_000;
        let workers = if bad {
            65 + u32::from(workers)
        } else {
            1 + u32::from(workers) % 64
        };
        let text = format!(
            "database_url = {:?}\nkms_rate = {}.5\nbatch_size = {batch}\nworkers = {workers}\n",
            url(),
            rate
        );
        let mut args: Vec<String> = match cmd {
            Cmd::Status => vec!["status".into()],
            Cmd::Verify => vec!["verify".into()],
            Cmd::Rotate => vec!["rotate".into(), "--all-tenants".into()],
            Cmd::Rewrap => vec!["rewrap".into(), "--to".into(), "local:v2".into()],
            Cmd::DecryptColumn => [
                "decrypt-column",
                "--table",
                "t",
                "--column",
                "c",
                "--into",
                "p",
            ]
            .map(String::from)
            .to_vec(),
            Cmd::Init => vec!["init".into()],
        };
        args.push("--json".into());
        match check_config(&args, Some(&text)) {
            Ok(()) => assert!(!bad, "workers = {workers} accepted"),
            Err(e) => {
                assert_clean(&e);
                assert!(bad, "a valid config rejected: {e:?}\n{text}");
                assert!(matches!(e.code, Exit::Config));
            }
        }
        return;
    }

    // The URL under the wrong key, or swallowed by a multi-line string given
    // to another key: whatever the outcome, the error must not quote it.
    if let Some(key) = &input.misplaced {
        let name = key.name();
        for text in [
            format!("{name} = {:?}\n", url()),
            format!("{name} = \"\"\"\ndatabase_url = {:?}\n\"\"\"\n", url()),
            format!("{name} = '''\ndatabase_url = {:?}\n'''\n", url()),
            format!("{name} = [{:?}]\n", url()),
        ] {
            if let Err(e) = check_config(["status"], Some(&text)) {
                assert_clean(&e);
            }
        }
        return;
    }

    // Arbitrary input, with the password planted in the file and perhaps in
    // a flag. Inputs that spell the password themselves are skipped: an echo
    // of the caller's own typo is not a leak of the planted secret.
    if input.tail.contains(PASSWORD)
        || input.args.iter().any(|a| a.contains(PASSWORD))
        || input
            .entries
            .iter()
            .any(|(k, v)| k.name().contains(PASSWORD) || v.toml().contains(PASSWORD))
    {
        return;
    }
    let mut text = String::new();
    let at = usize::from(input.secret_at) % (input.entries.len() + 1);
    for (i, (k, v)) in input.entries.iter().enumerate() {
        if i == at {
            text.push_str(&format!("database_url = {:?}\n", url()));
        }
        text.push_str(&format!("{} = {}\n", k.name(), v.toml()));
    }
    if at == input.entries.len() {
        text.push_str(&format!("database_url = {:?}\n", url()));
    }
    text.push_str(&input.tail);

    let mut args = input.args.clone();
    if input.secret_flag {
        args.insert(0, format!("--database-url={}", url()));
    }
    if let Err(e) = check_config(&args, Some(&text)) {
        assert_clean(&e);
    }
});
