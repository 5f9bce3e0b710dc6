#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `check_config` (the config fuzz target's entry point) against the checks
//! `rowseal` itself runs before it connects (`check_command_line`, which
//! reads the config file from disk as the tool does): the same command lines
//! and config files must be accepted and rejected alike, with the same exit
//! codes, for every command — including `reindex` and `encrypt-column`.

use rowseal_cli::{check_command_line, check_config, Exit};

/// The exit code of a check (0: accepted).
fn code(r: Result<(), rowseal_cli::CliError>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(e) => e.code as u8,
    }
}

const URL: &str = "--database-url=sqlite://rowseal-check-config-never-opened.db";

/// KMS key ARNs, for the allow-list.
const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const MRK: &str = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";

/// Every command, with its required arguments.
fn commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["init"],
        vec!["status"],
        vec!["verify"],
        vec!["rotate", "--all-tenants"],
        vec!["rewrap", "--to", "local:v2"],
        vec![
            "decrypt-column",
            "--table",
            "t",
            "--column",
            "c",
            "--into",
            "p",
        ],
        vec!["encrypt-column", "--table", "t"],
        vec!["reindex"],
        vec!["shred", "--tenant", "acme"],
    ]
}

/// Extra arguments tried with every command (whatever the command accepts
/// or refuses).
fn variants() -> Vec<Vec<&'static str>> {
    vec![
        vec![URL],
        vec![URL, "--batch-size", "0"],
        vec![URL, "--batch-size", "10001"],
        vec![URL, "--batch-size", "25"],
        vec![URL, "--workers", "0"],
        vec![URL, "--workers", "65"],
        vec![URL, "--workers", "4"],
        vec![URL, "--max-rows-per-second", "0"],
        vec![URL, "--max-rows-per-second", "nan"],
        vec![URL, "--max-rows-per-second", "inf"],
        vec![URL, "--max-rows-per-second", "abc"],
        vec![URL, "--max-rows-per-second", "12.5"],
        vec![URL, "--kms-rate", "0"],
        vec![URL, "--kms-rate", "3"],
        vec![URL, "--kms-key-id", "alias/rowseal", "--kms-allow-key", ARN],
        vec![
            URL,
            "--kms-key-id",
            "alias/rowseal",
            "--kms-allow-key",
            ARN,
            "--kms-allow-key",
            MRK,
        ],
        vec![
            URL,
            "--kms-key-id",
            "alias/rowseal",
            "--kms-allow-key",
            "alias/old",
        ],
        vec![URL, "--kms-allow-key", ARN],
        vec![URL, "--bogus"],
        vec![URL, "--table", "people"],
        vec!["--database-url", "oracle://scott:tiger@db/x"],
        vec!["--database-url", "postgres://u:pw@127.0.0.1:1/x"],
        vec!["--database-url", "mariadb://u:pw@127.0.0.1:1/x"],
        vec!["--database-url", "nonsense"],
        vec!["--database-url", ""],
        vec![],
    ]
}

/// Config files tried with a few command lines.
fn files() -> Vec<&'static str> {
    vec![
        "",
        "batch_size = 0\n",
        "batch_size = 50\nworkers = 8\n",
        "workers = 0\n",
        "workers = 65\n",
        "max_rows_per_second = -1.0\n",
        "max_rows_per_second = 100.0\n",
        "kms_rate = 0.0\n",
        "kms_key_id = \"alias/rowseal\"\nkms_allowed_keys = [\"arn:aws:kms:us-east-1:1:key/k\"]\n",
        "kms_key_id = \"alias/rowseal\"\nkms_allowed_keys = [\"alias/old\"]\n",
        "kms_key_id = \"alias/rowseal\"\nkms_allowed_keys = \"arn:aws:kms:us-east-1:1:key/k\"\n",
        "kms_allowed_keys = [\"arn:aws:kms:us-east-1:1:key/k\"]\n",
        "database_url = \"oracle://scott:tiger@db/x\"\n",
        "database_url = \"sqlite://x.db\"\n",
        "database_url = \"sqlite://x.db\"\nbatch_size = 0\n",
        "database_url = \"sqlite://x.db\"\nworkers = 0\n",
        "password = \"s3cret\"\n",
        "batch_size = \"many\"\n",
        "this is not toml",
    ]
}

fn check_both(args: &[&str], file: Option<&str>, dir: &std::path::Path, n: usize) -> (u8, u8) {
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    if let Some(text) = file {
        let path = dir.join(format!("rowseal-{n}.toml"));
        std::fs::write(&path, text).unwrap();
        args.push("--config".into());
        args.push(path.display().to_string());
    }
    let real = code(check_command_line(&args));
    let fuzzed = code(check_config(&args, file));
    assert_eq!(
        real, fuzzed,
        "rowseal exits {real} but check_config {fuzzed} for {args:?} with config {file:?}"
    );
    (real, fuzzed)
}

#[test]
fn check_config_accepts_and_rejects_what_rowseal_does() {
    let dir = std::env::temp_dir().join(format!(
        "rowseal-check-config-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    let mut outcomes = std::collections::BTreeMap::new();
    for cmd in commands() {
        for extra in variants() {
            let args: Vec<&str> = cmd.iter().chain(&extra).copied().collect();
            n += 1;
            let (code, _) = check_both(&args, None, &dir, n);
            *outcomes.entry(code).or_insert(0) += 1;
        }
        for text in files() {
            for extra in [vec![], vec![URL], vec![URL, "--batch-size", "9"]] {
                let args: Vec<&str> = cmd.iter().chain(&extra).copied().collect();
                n += 1;
                let (code, _) = check_both(&args, Some(text), &dir, n);
                *outcomes.entry(code).or_insert(0) += 1;
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // The lists cover every outcome: accepted, usage and config errors.
    for c in [0, Exit::Usage as u8, Exit::Config as u8] {
        assert!(outcomes.get(&c).copied().unwrap_or(0) > 0, "{outcomes:?}");
    }
}

/// The batch options of every batch command are checked, by both paths.
#[test]
fn batch_options_of_every_batch_command_are_checked() {
    let dir = std::env::temp_dir();
    for cmd in [
        vec!["rotate", "--all-tenants"],
        vec!["verify"],
        vec!["rewrap", "--to", "local:v2"],
        vec!["reindex"],
        vec!["encrypt-column", "--table", "t"],
        vec![
            "decrypt-column",
            "--table",
            "t",
            "--column",
            "c",
            "--into",
            "p",
        ],
    ] {
        let mut args = cmd.clone();
        args.extend([URL, "--batch-size", "0"]);
        assert_eq!(
            check_both(&args, None, &dir, 0).0,
            Exit::Config as u8,
            "{args:?}"
        );
        let mut args = cmd.clone();
        args.push(URL);
        assert_eq!(check_both(&args, None, &dir, 0).0, 0, "{args:?}");
    }
    for cmd in [vec!["reindex"], vec!["encrypt-column", "--table", "t"]] {
        for bad in [["--workers", "0"], ["--max-rows-per-second", "nan"]] {
            let mut args = cmd.clone();
            args.push(URL);
            args.extend(bad);
            assert_eq!(
                check_both(&args, None, &dir, 0).0,
                Exit::Config as u8,
                "{args:?}"
            );
        }
    }
}

/// The KMS allow-list (`--kms-allow-key`, `ROWSEAL_KMS_ALLOWED_KEYS`,
/// `kms_allowed_keys`): full key ARNs only, only with a KMS key, flags over
/// the file; a bad entry is a configuration error that never quotes it.
#[test]
fn kms_allow_list_is_checked() {
    let dir = std::env::temp_dir().join(format!(
        "rowseal-check-config-allow-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kms = ["status", URL, "--kms-key-id", "alias/rowseal"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        kms.iter().chain(extra).copied().collect()
    };
    let file = |keys: &str| format!("kms_key_id = \"alias/rowseal\"\nkms_allowed_keys = {keys}\n");
    let arn_list = format!("[{ARN:?}, {MRK:?}]");
    let cases: Vec<(Vec<&str>, Option<String>, u8)> = vec![
        (with(&["--kms-allow-key", ARN]), None, 0),
        (
            with(&["--kms-allow-key", ARN, "--kms-allow-key", MRK]),
            None,
            0,
        ),
        (
            with(&["--kms-allow-key", "alias/old"]),
            None,
            Exit::Config as u8,
        ),
        (
            with(&["--kms-allow-key", "1234abcd-12ab-34cd-56ef-1234567890ab"]),
            None,
            Exit::Config as u8,
        ),
        (with(&["--kms-allow-key", ""]), None, Exit::Config as u8),
        (
            vec!["status", URL, "--kms-allow-key", ARN],
            None,
            Exit::Config as u8,
        ),
        (vec!["status", URL], Some(file(&arn_list)), 0),
        (vec!["status", URL], Some(file("[]")), 0),
        (
            vec!["status", URL],
            Some(file("[\"alias/old\"]")),
            Exit::Config as u8,
        ),
        (
            vec!["status", URL],
            Some(file(&format!("{ARN:?}"))),
            Exit::Config as u8,
        ),
        // Flags replace the file's list: a bad file entry is not looked at.
        (
            vec!["status", URL, "--kms-allow-key", ARN],
            Some(file("[\"alias/old\"]")),
            0,
        ),
        (
            vec!["status", URL],
            Some(format!("kms_allowed_keys = {arn_list}\n")),
            Exit::Config as u8,
        ),
    ];
    for (n, (args, text, want)) in cases.into_iter().enumerate() {
        let got = check_both(&args, text.as_deref(), &dir, n).0;
        assert_eq!(got, want, "{args:?} with {text:?}");
    }

    // A database URL given as an entry (a misplaced line) is never quoted.
    let secret = "postgres://u:pw-SECRET-allow@db/app";
    for text in [
        format!("kms_key_id = \"alias/rowseal\"\nkms_allowed_keys = [{secret:?}]\n"),
        format!("kms_key_id = \"alias/rowseal\"\nkms_allowed_keys = [{ARN:?}, {secret:?}]\n"),
    ] {
        let e = check_config(["status", URL], Some(&text)).unwrap_err();
        assert_eq!(e.code, Exit::Config);
        assert!(!e.message.contains("pw-SECRET"), "{}", e.message);
        assert!(
            e.message.contains("kms_allowed_keys entry"),
            "{}",
            e.message
        );
    }
    let flag = format!("--kms-allow-key={secret}");
    let e = check_config(["status", URL, "--kms-key-id", "k", flag.as_str()], None).unwrap_err();
    assert!(!e.message.contains("pw-SECRET"), "{}", e.message);
    std::fs::remove_dir_all(&dir).unwrap();
}
