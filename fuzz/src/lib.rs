//! What the fuzz targets share: a runtime for the async key hierarchy, a key
//! hierarchy over a root key chosen by the input, byte mutations, and the
//! "no secret in this text" check.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use rowseal_core::{
    Error, FieldSet, KeyHierarchy, LocalKeyProvider, MemoryKeyStore, RecordSpec, Result, RowKey,
    SecretKey,
};

/// Runs a future to completion on a process-wide current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
    .block_on(f)
}

/// A local provider whose only root key (version 1) is `root`.
pub fn provider(root: [u8; 32]) -> LocalKeyProvider {
    let ring = LocalKeyProvider::keyring_entry(1, &SecretKey::from_bytes(root));
    LocalKeyProvider::from_keyring_str(&ring).expect("a one-key keyring parses")
}

/// A fresh key hierarchy (in-memory key store) over the root key `root`.
pub fn hierarchy(root: [u8; 32]) -> KeyHierarchy {
    KeyHierarchy::new(Arc::new(provider(root)), Arc::new(MemoryKeyStore::new()))
}

/// A change to a byte string that always yields different bytes.
#[derive(Debug, Clone, Arbitrary)]
pub enum Mutation {
    /// XOR one byte (at `at` modulo the length) with a non-zero value.
    Flip {
        /// Where.
        at: usize,
        /// With what (0 is read as 1).
        xor: u8,
    },
    /// Keep the first `to` (modulo the length) bytes.
    Truncate {
        /// How many.
        to: usize,
    },
    /// Append bytes (at least one).
    Extend {
        /// What.
        with: Vec<u8>,
    },
    /// Insert one byte.
    Insert {
        /// Where.
        at: usize,
        /// What.
        byte: u8,
    },
    /// Remove one byte.
    Remove {
        /// Where.
        at: usize,
    },
}

impl Mutation {
    /// Applies the mutation; `None` when it cannot change `bytes` (empty input
    /// for the mutations that need a byte).
    pub fn apply(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut out = bytes.to_vec();
        match self {
            Mutation::Flip { at, xor } => {
                let i = at.checked_rem(out.len())?;
                out[i] ^= (*xor).max(1);
            }
            Mutation::Truncate { to } => out.truncate(to.checked_rem(out.len())?),
            Mutation::Extend { with } => {
                if with.is_empty() {
                    out.push(0);
                } else {
                    out.extend_from_slice(with);
                }
            }
            Mutation::Insert { at, byte } => {
                let i = at.checked_rem(out.len() + 1)?;
                out.insert(i, *byte);
            }
            Mutation::Remove { at } => {
                let i = at.checked_rem(out.len())?;
                out.remove(i);
            }
        }
        (out != bytes).then_some(out)
    }
}

/// The errors a hostile byte string may cause: typed, saying nothing of the
/// bytes. (`FieldPresence`: a format v2 header whose present-field count
/// was changed.)
pub fn is_typed_rejection(e: &Error) -> bool {
    matches!(
        e,
        Error::Decrypt
            | Error::Malformed { .. }
            | Error::UnsupportedFormat { .. }
            | Error::KeyNotFound { .. }
            | Error::Provider(_)
            | Error::FieldPresence { .. }
    )
}

/// The row format versions the targets write rows in: 2 (what new rows
/// are) and 1 (old rows, through the test-only v1 entry point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Format 2.
    V2,
    /// Format 1.
    V1,
}

/// Both formats, v2 first.
pub const FORMATS: [Format; 2] = [Format::V2, Format::V1];

/// A new row key of `format` for a row whose present encrypted fields are
/// `present` (ignored by v1).
pub fn new_row_key(
    keys: &KeyHierarchy,
    format: Format,
    spec: &RecordSpec,
    tenant: &str,
    primary_key: Option<&[u8]>,
    present: &FieldSet,
) -> Result<RowKey> {
    match format {
        Format::V2 => block_on(keys.new_row_key(spec, tenant, primary_key, present)),
        Format::V1 => block_on(keys.new_row_key_v1(spec, tenant, primary_key)),
    }
}

/// The prefix of plaintext values whose absence from errors is checked.
pub const PLAINTEXT_MARKER: &str = "PLAINTEXT-MARKER-q7Zx";

/// Every way a secret may be spelled in text: hex (both cases), base64
/// standard and URL-safe (with and without padding), and the raw bytes when
/// they are valid UTF-8.
pub fn encodings(secret: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![
        hex.to_uppercase(),
        hex,
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
    ];
    if let Ok(s) = std::str::from_utf8(secret) {
        out.push(s.to_owned());
    }
    out
}

/// Panics (a fuzz crash) if `text` holds `secret` in any of its
/// [`encodings`]. Secrets shorter than 6 bytes are not checked (too likely to
/// occur by chance in any message); neither is the raw form of a secret that is
/// all printable ASCII (a key the fuzzer spelled as the words of an error
/// message would be a false alarm): plaintext checks use a distinctive marker
/// ([`PLAINTEXT_MARKER`]) so that their raw form stays checked.
pub fn assert_no_secret(what: &str, text: &str, secret: &[u8]) {
    assert_no_secret_but_echo(what, text, secret, &[]);
}

/// [`assert_no_secret`], except for spellings of the secret that occur in
/// `echoed`: inputs the caller gave (a key id, a tenant name) that an error
/// may quote. A fuzzer that copies key bytes into a key id has not found a
/// leak.
pub fn assert_no_secret_but_echo(what: &str, text: &str, secret: &[u8], echoed: &[&str]) {
    if secret.len() < 6 {
        return;
    }
    let marked = secret.starts_with(PLAINTEXT_MARKER.as_bytes());
    let printable = secret.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    for enc in encodings(secret) {
        if printable && !marked && enc.as_bytes() == secret {
            continue;
        }
        if echoed.iter().any(|e| e.contains(&enc)) {
            continue;
        }
        for (at, _) in text.match_indices(enc.as_str()) {
            assert!(
                mostly_echo(text, at, enc.len(), echoed),
                "{what} reveals a secret ({} bytes) as {enc:?}: {text}",
                secret.len()
            );
        }
    }
}

/// Whether the occurrence `text[at..at + len]` is at least half made of an
/// echoed input quoted at that place (e.g. "key " followed by a key id the
/// fuzzer filled with the key's bytes): the input's own bytes, not a leak.
fn mostly_echo(text: &str, at: usize, len: usize, echoed: &[&str]) -> bool {
    echoed.iter().filter(|e| !e.is_empty()).any(|e| {
        text.match_indices(*e).any(|(start, m)| {
            let overlap = (at + len).min(start + m.len()).saturating_sub(at.max(start));
            overlap * 2 >= len
        })
    })
}

/// Checks an error's `Display` and `Debug` (and its source chain) against
/// every secret.
pub fn assert_error_is_clean(e: &dyn std::error::Error, secrets: &[&[u8]]) {
    assert_error_is_clean_but_echo(e, secrets, &[]);
}

/// [`assert_error_is_clean`], with [`assert_no_secret_but_echo`]'s exception.
pub fn assert_error_is_clean_but_echo(
    e: &dyn std::error::Error,
    secrets: &[&[u8]],
    echoed: &[&str],
) {
    let mut texts = vec![e.to_string(), format!("{e:?}")];
    let mut source = e.source();
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    for t in &texts {
        for s in secrets {
            assert_no_secret_but_echo("an error", t, s, echoed);
        }
    }
}

/// The targets' inputs (here so that `tests/seed_corpus.rs` can check the
/// seeds it writes decode as intended).
pub mod inputs {
    use super::Mutation;
    use libfuzzer_sys::arbitrary::{self, Arbitrary};

    /// The input of `field_envelope`.
    #[derive(Debug, Arbitrary)]
    pub struct FieldEnvelopeInput {
        /// The local root key.
        pub root: [u8; 32],
        /// `kms` key mode (else `derived`).
        pub kms_mode: bool,
        /// Whether the record type binds its primary key.
        pub bind_pk: bool,
        /// The tenant.
        pub tenant: String,
        /// The column the value is sealed for.
        pub column: String,
        /// Another column.
        pub other_column: String,
        /// The row's primary key.
        pub pk: Option<Vec<u8>>,
        /// Another primary key.
        pub other_pk: Vec<u8>,
        /// The plaintext.
        pub value: Vec<u8>,
        /// A change to the sealed value.
        pub mutation: Mutation,
        /// Bytes opened as a field envelope (last: seeds put envelopes here).
        pub raw: Vec<u8>,
    }

    /// The input of `row_header`.
    #[derive(Debug, Arbitrary)]
    pub struct RowHeaderInput {
        /// The local root key.
        pub root: [u8; 32],
        /// `kms` key mode (else `derived`).
        pub kms_mode: bool,
        /// The tenant.
        pub tenant: String,
        /// Another tenant.
        pub other_tenant: String,
        /// A change to a real header.
        pub mutation: Mutation,
        /// Bytes parsed and opened as a row header (last: seeds put real headers
        /// here).
        pub raw: Vec<u8>,
    }

    /// The input of `wrapped_key`.
    #[derive(Debug, Arbitrary)]
    pub struct WrappedKeyInput {
        /// The local root key.
        pub root: [u8; 32],
        /// A key id for `WrappedKey::new`.
        pub key_id: String,
        /// A ciphertext for `WrappedKey::new`.
        pub ciphertext: Vec<u8>,
        /// The tenant of the encryption context.
        pub tenant: String,
        /// Another tenant.
        pub other_tenant: String,
        /// An extra context entry.
        pub extra: Option<(String, String)>,
        /// A change to a real wrapped key record.
        pub mutation: Mutation,
        /// Bytes parsed as a wrapped key record (last: seeds put real records
        /// here).
        pub raw: Vec<u8>,
    }

    /// One built-in normalization step, by name.
    #[derive(Debug, Arbitrary)]
    pub enum Step {
        /// `trim`
        Trim,
        /// `lowercase`
        Lowercase,
        /// `nfc`
        Nfc,
        /// `digits`
        Digits,
        /// `alnum`
        Alnum,
        /// `lastN` (0 is read as 1)
        Last(u8),
    }

    impl Step {
        /// The step's name in a normalization spec.
        pub fn name(&self) -> String {
            match self {
                Step::Trim => "trim".into(),
                Step::Lowercase => "lowercase".into(),
                Step::Nfc => "nfc".into(),
                Step::Digits => "digits".into(),
                Step::Alnum => "alnum".into(),
                Step::Last(n) => format!("last{}", n.max(&1)),
            }
        }
    }

    /// The input of `blind_normalize`.
    #[derive(Debug, Arbitrary)]
    pub struct BlindNormalizeInput {
        /// Any text parsed as a normalization spec.
        pub spec: String,
        /// A composition of named steps.
        pub steps: Vec<Step>,
        /// A value (UTF-8).
        pub text: String,
        /// Index bits.
        pub bits: u16,
        /// Parts of a compound index value.
        pub parts: Vec<Vec<u8>>,
        /// Where to re-split the joined parts.
        pub split: usize,
        /// A value as bytes, read as UTF-8 lossily (last: seeds put values here).
        pub bytes: Vec<u8>,
    }

    /// A config file key.
    #[derive(Debug, Arbitrary)]
    pub enum Key {
        /// `database_url`
        DatabaseUrl,
        /// `key_file`
        KeyFile,
        /// `kms_key_id`
        KmsKeyId,
        /// `aws_region`
        AwsRegion,
        /// `kms_endpoint`
        KmsEndpoint,
        /// `kms_rate`
        KmsRate,
        /// `batch_size`
        BatchSize,
        /// `workers`
        Workers,
        /// `max_rows_per_second`
        MaxRowsPerSecond,
        /// Any other key.
        Other(String),
    }

    impl Key {
        /// The key as written in the file.
        pub fn name(&self) -> String {
            match self {
                Key::DatabaseUrl => "database_url".into(),
                Key::KeyFile => "key_file".into(),
                Key::KmsKeyId => "kms_key_id".into(),
                Key::AwsRegion => "aws_region".into(),
                Key::KmsEndpoint => "kms_endpoint".into(),
                Key::KmsRate => "kms_rate".into(),
                Key::BatchSize => "batch_size".into(),
                Key::Workers => "workers".into(),
                Key::MaxRowsPerSecond => "max_rows_per_second".into(),
                Key::Other(s) => s.clone(),
            }
        }
    }

    /// A config file value.
    #[derive(Debug, Arbitrary)]
    pub enum Val {
        /// A TOML string.
        Str(String),
        /// An integer.
        Int(i64),
        /// A float.
        Float(f64),
        /// A boolean.
        Bool(bool),
        /// Text as it is (perhaps not TOML).
        Raw(String),
        /// An array of integers.
        Array(Vec<i8>),
    }

    impl Val {
        /// The value as written in the file.
        pub fn toml(&self) -> String {
            match self {
                Val::Str(s) => format!("{s:?}"),
                Val::Int(i) => i.to_string(),
                Val::Float(f) if f.is_finite() => format!("{f:?}"),
                Val::Float(_) => "nan".into(),
                Val::Bool(b) => b.to_string(),
                Val::Raw(s) => s.clone(),
                Val::Array(v) => format!("{v:?}"),
            }
        }
    }

    /// A command.
    #[derive(Debug, Arbitrary)]
    pub enum Cmd {
        /// `status`
        Status,
        /// `verify`
        Verify,
        /// `rotate --all-tenants`
        Rotate,
        /// `rewrap --to local:v2`
        Rewrap,
        /// `decrypt-column ...`
        DecryptColumn,
        /// `init`
        Init,
    }

    /// The input of `cli_config`.
    #[derive(Debug, Arbitrary)]
    pub struct CliConfigInput {
        /// Where (among the entries) the secret `database_url` line goes.
        pub secret_at: u8,
        /// Give the password by flag too.
        pub secret_flag: bool,
        /// Config file entries.
        pub entries: Vec<(Key, Val)>,
        /// Command-line arguments.
        pub args: Vec<String>,
        /// A well-formed config instead: command, batch size, workers, KMS rate,
        /// and whether workers is out of range.
        pub valid: Option<(Cmd, u16, u8, u8, bool)>,
        /// A database URL written under this key instead, alone and inside
        /// a multi-line string that swallows the `database_url` line.
        pub misplaced: Option<Key>,
        /// Free text appended to the file (last: seeds put whole config files
        /// here).
        pub tail: String,
    }
}
