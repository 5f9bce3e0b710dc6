//! Every code block of the README and the docs is checked:
//!
//! - every fence is labelled (`rust`, `sh`, `console`, `text`, `toml`,
//!   `json`, `sql`, ...): an unlabelled fence would be compiled as Rust by
//!   the doctests that include these files (`crates/rowseal/src/lib.rs`),
//!   and says nothing to the reader;
//! - every line of a `sh` / `bash` / `console` block that runs `rowseal`
//!   parses with the tool's own command-line definition (unknown commands,
//!   flags or missing arguments fail with file:line);
//! - `toml` and `json` blocks parse;
//! - `sql` blocks run, statement by statement, against rowseal's own tables
//!   (installed with `schema::install`) on SQLite, and on PostgreSQL when it
//!   is reachable (a loud skip otherwise, a failure with `CI=true`);
//! - `rust` blocks are the doctests' business (`cargo test -p rowseal
//!   --all-features --doc`); here only their attributes are checked: an
//!   `ignore`d block must say why on its first line (`// ...`).
//!
//! Files: `README.md`, `docs/*.md`, `examples/*/README.md`. `sql` blocks in
//! the examples' READMEs use the example's own tables and run in the
//! example's tests instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use clap::Parser;
use rowseal_cli::Cli;
use sqlx::Executor;

struct Block {
    file: String,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    attrs: Vec<String>,
    /// (1-based line, text)
    lines: Vec<(usize, String)>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path().join("README.md"))
        .filter(|p| p.exists())
        .collect();
    examples.sort();
    files.extend(examples);
    files
}

/// The fenced blocks of a markdown file (``` fences; `~~~` is not used in
/// this repository and is reported if it appears).
fn blocks(path: &Path) -> (Vec<Block>, Vec<String>) {
    let root = repo_root();
    let name = path
        .strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut open: Option<Block> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim_start();
        if let Some(b) = open.as_mut() {
            if trimmed.starts_with("```") && trimmed.trim_end() == "```" {
                out.push(open.take().unwrap());
            } else {
                b.lines.push((n, raw.to_owned()));
            }
            continue;
        }
        if trimmed.starts_with("~~~") {
            problems.push(format!("{name}:{n}: use ``` fences, not ~~~"));
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let mut parts = info.trim().split(',').map(|s| s.trim().to_owned());
            let lang = parts.next().unwrap_or_default();
            open = Some(Block {
                file: name.clone(),
                line: n,
                lang,
                attrs: parts.collect(),
                lines: Vec::new(),
            });
        }
    }
    if let Some(b) = open {
        problems.push(format!("{}:{}: code fence never closed", b.file, b.line));
    }
    (out, problems)
}

fn all_blocks() -> Vec<Block> {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for f in doc_files() {
        let (b, p) = blocks(&f);
        all.extend(b);
        problems.extend(p);
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    all
}

const LANGS: &[&str] = &[
    "rust", "sh", "bash", "console", "text", "toml", "json", "sql",
];

#[test]
fn every_fence_is_labelled_with_a_known_language() {
    let mut bad = Vec::new();
    let all = all_blocks();
    assert!(
        all.len() > 10,
        "only {} blocks found: wrong directory?",
        all.len()
    );
    for b in &all {
        if b.lang.is_empty() {
            bad.push(format!(
                "{}:{}: unlabelled code fence (say ```text, ```sh, ```rust, ...)",
                b.file, b.line
            ));
        } else if !LANGS.contains(&b.lang.as_str()) {
            bad.push(format!(
                "{}:{}: code fence language `{}` is not checked; use one of {LANGS:?}",
                b.file, b.line, b.lang
            ));
        }
        if b.lang == "rust" && b.attrs.iter().any(|a| a == "ignore") {
            let first = b.lines.first().map(|(_, l)| l.trim()).unwrap_or("");
            if !first.starts_with("//") {
                bad.push(format!(
                    "{}:{}: an ignored Rust block must say why on its first line (`// ...`)",
                    b.file, b.line
                ));
            }
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

/// Shell-like words: whitespace-separated, with '...' and "..." quoting.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unclosed quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// The `rowseal ...` command lines of a shell block: `\` continuations
/// joined, `$ ` prompts (console) stripped, comments and anything after a
/// pipe, `;`, `&&` or `||` dropped, leading `VAR=value` assignments skipped.
fn rowseal_commands(b: &Block) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in &b.lines {
        let mut line = raw.trim().to_owned();
        if b.lang == "console" {
            match line.strip_prefix("$ ") {
                Some(cmd) => line = cmd.to_owned(),
                None if pending.is_none() => continue, // output
                None => {}
            }
        }
        let (start, joined) = match pending.take() {
            Some((s, mut acc)) => {
                acc.push(' ');
                acc.push_str(&line);
                (s, acc)
            }
            None => (*n, line),
        };
        if let Some(stripped) = joined.strip_suffix('\\') {
            pending = Some((start, stripped.to_owned()));
            continue;
        }
        // Comments: a `#` at the start of a word.
        let mut cmd = joined.as_str();
        if let Some(pos) = cmd
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || cmd[..i].ends_with(char::is_whitespace)))
            .map(|(i, _)| i)
        {
            cmd = &cmd[..pos];
        }
        for sep in ["|", ";", "&&", "||", ">", "<"] {
            if let Some(pos) = cmd.find(sep) {
                cmd = &cmd[..pos];
            }
        }
        let Ok(mut w) = words(cmd) else {
            out.push((start, vec!["<unparseable shell line>".into()]));
            continue;
        };
        while w.first().is_some_and(|x| {
            x.contains('=')
                && !x.starts_with('-')
                && x.split('=').next().is_some_and(|k| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
        }) {
            w.remove(0);
        }
        if w.first().map(String::as_str) == Some("rowseal") {
            out.push((start, w));
        }
    }
    out
}

#[test]
fn every_rowseal_command_in_the_docs_parses() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for b in all_blocks() {
        if !matches!(b.lang.as_str(), "sh" | "bash" | "console") {
            continue;
        }
        for (line, argv) in rowseal_commands(&b) {
            checked += 1;
            match Cli::try_parse_from(&argv) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayHelp
                            | clap::error::ErrorKind::DisplayVersion
                            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                    ) => {}
                Err(e) => {
                    let first = e.to_string();
                    let first = first.lines().next().unwrap_or_default().to_owned();
                    bad.push(format!("{}:{line}: `{}`: {first}", b.file, argv.join(" ")));
                }
            }
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    // The docs do show commands: if none were found, the extraction broke.
    assert!(checked >= 5, "only {checked} rowseal command lines found");
}

#[test]
fn the_checker_rejects_what_it_should() {
    // A guard on the checker itself, so that it cannot silently pass.
    let b = Block {
        file: "x.md".into(),
        line: 1,
        lang: "sh".into(),
        attrs: vec![],
        lines: vec![
            (
                2,
                "rowseal rotate --tenant acme --workers 2   # comment".into(),
            ),
            (
                3,
                "DATABASE_URL=sqlite://x.db rowseal status --table t | jq .".into(),
            ),
            (4, "rowseal rotate \\".into()),
            (5, "  --all-tenants --no-such-flag".into()),
            (6, "echo rowseal init".into()),
        ],
    };
    let cmds = rowseal_commands(&b);
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert_eq!(
        cmds[0].1,
        ["rowseal", "rotate", "--tenant", "acme", "--workers", "2"]
    );
    assert_eq!(cmds[1].1, ["rowseal", "status", "--table", "t"]);
    assert_eq!(cmds[2].0, 4);
    assert!(Cli::try_parse_from(&cmds[0].1).is_ok());
    assert!(Cli::try_parse_from(&cmds[1].1).is_ok());
    assert!(Cli::try_parse_from(&cmds[2].1).is_err());
    assert!(Cli::try_parse_from(["rowseal", "no-such-command"]).is_err());
    assert!(Cli::try_parse_from(["rowseal", "shred"]).is_err()); // --tenant is required
}

#[test]
fn toml_and_json_blocks_parse() {
    let mut bad = Vec::new();
    for b in all_blocks() {
        let text: String = b.lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        let err = match b.lang.as_str() {
            "toml" => toml::from_str::<toml::Table>(&text)
                .err()
                .map(|e| e.to_string()),
            "json" => serde_json::from_str::<serde_json::Value>(&text)
                .err()
                .map(|e| e.to_string()),
            _ => None,
        };
        if let Some(e) = err {
            bad.push(format!(
                "{}:{}: {} block does not parse: {e}",
                b.file, b.line, b.lang
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

/// The `sql` blocks of README.md and docs/*.md, as statements (split on `;`
/// at line ends), with the line of each.
fn sql_statements() -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for b in all_blocks() {
        if b.lang != "sql" || b.file.starts_with("examples") {
            continue;
        }
        let mut cur = String::new();
        let mut start = 0;
        for (n, l) in &b.lines {
            let code = l.split("--").next().unwrap_or("").trim_end();
            if code.trim().is_empty() && cur.is_empty() {
                continue;
            }
            if cur.is_empty() {
                start = *n;
            }
            cur.push_str(code);
            cur.push('\n');
            if code.ends_with(';') {
                out.push((b.file.clone(), start, std::mem::take(&mut cur)));
            }
        }
        if !cur.trim().is_empty() {
            out.push((b.file.clone(), start, cur));
        }
    }
    out
}

#[tokio::test]
async fn sql_blocks_run_on_sqlite() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    rowseal_sqlx::schema::install(&pool).await.unwrap();
    let statements = sql_statements();
    // docs/runbook.md has some: if none are found, the extraction broke.
    assert!(
        statements.len() >= 2,
        "only {} SQL statements found",
        statements.len()
    );
    let mut bad = Vec::new();
    for (file, line, sql) in statements {
        if let Err(e) = pool.execute(sql.as_str()).await {
            bad.push(format!("{file}:{line}: SQLite: {e}"));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test]
async fn sql_blocks_run_on_postgres() {
    let Some(db) = rowseal_test_support::db::postgres(1).await else {
        return;
    };
    let result = async {
        let pool = &db.pool;
        rowseal_sqlx::schema::install(pool).await.unwrap();
        let mut bad = Vec::new();
        for (file, line, sql) in sql_statements() {
            if let Err(e) = pool.execute(sql.as_str()).await {
                bad.push(format!("{file}:{line}: PostgreSQL: {e}"));
            }
        }
        bad
    }
    .await;
    db.finish().await;
    assert!(result.is_empty(), "\n{}", result.join("\n"));
}
