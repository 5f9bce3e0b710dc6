//! Named, composable normalizations applied before a value is indexed.

use std::fmt;
use std::sync::Arc;

use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

type CustomFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// One normalization step.
///
/// Built-in steps have names, so they can be written in an attribute
/// (`normalize = "trim, lowercase, nfc"`) or stored in the schema registry;
/// custom steps are Rust closures with a name of your choosing.
#[non_exhaustive]
#[derive(Clone)]
pub enum Normalizer {
    /// Remove leading and trailing Unicode whitespace (`trim`).
    Trim,
    /// Unicode lowercase (`lowercase`).
    Lowercase,
    /// Unicode canonical composition, NFC (`nfc`), so that "é" typed as one
    /// code point or as "e" + accent index alike.
    Nfc,
    /// Keep ASCII digits only (`digits`): "123-45-6789" → "123456789".
    DigitsOnly,
    /// Keep Unicode letters and digits only (`alnum`).
    AlphanumericOnly,
    /// Keep the last N characters (`last4`, `last(4)`): index the end of a
    /// card or account number.
    LastChars(usize),
    /// Your own step.
    Custom {
        /// A stable name: it is recorded with the index, and changing what a
        /// name does requires rebuilding the index.
        name: String,
        /// The step.
        f: CustomFn,
    },
}

impl Normalizer {
    /// The names of the built-in steps, as written in attributes and
    /// accepted by [`Normalizer::builtin`]; `lastN` stands for `last4`,
    /// `last(4)` and any other count above zero. (The derive macro checks
    /// `normalize = "..."` with `builtin` and lists these in its error.)
    pub const BUILTIN_NAMES: &'static [&'static str] =
        &["trim", "lowercase", "nfc", "digits", "alnum", "lastN"];

    /// A custom step.
    pub fn custom(
        name: impl Into<String>,
        f: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        Normalizer::Custom {
            name: name.into(),
            f: Arc::new(f),
        }
    }

    /// Applies the step.
    pub fn apply(&self, s: &str) -> String {
        match self {
            Normalizer::Trim => s.trim().to_owned(),
            Normalizer::Lowercase => s.to_lowercase(),
            Normalizer::Nfc => s.nfc().collect(),
            Normalizer::DigitsOnly => s.chars().filter(char::is_ascii_digit).collect(),
            Normalizer::AlphanumericOnly => s.chars().filter(|c| c.is_alphanumeric()).collect(),
            Normalizer::LastChars(n) => {
                let count = s.chars().count();
                s.chars().skip(count.saturating_sub(*n)).collect()
            }
            Normalizer::Custom { f, .. } => f(s),
        }
    }

    /// The step's name, as written in attributes.
    pub fn name(&self) -> String {
        match self {
            Normalizer::Trim => "trim".into(),
            Normalizer::Lowercase => "lowercase".into(),
            Normalizer::Nfc => "nfc".into(),
            Normalizer::DigitsOnly => "digits".into(),
            Normalizer::AlphanumericOnly => "alnum".into(),
            Normalizer::LastChars(n) => format!("last{n}"),
            Normalizer::Custom { name, .. } => name.clone(),
        }
    }

    /// A built-in step by name.
    pub fn builtin(name: &str) -> Result<Self> {
        let name = name.trim();
        let last = name
            .strip_prefix("last(")
            .and_then(|r| r.strip_suffix(')'))
            .or_else(|| name.strip_prefix("last"));
        Ok(match name {
            "trim" => Normalizer::Trim,
            "lowercase" => Normalizer::Lowercase,
            "nfc" => Normalizer::Nfc,
            "digits" => Normalizer::DigitsOnly,
            "alnum" => Normalizer::AlphanumericOnly,
            _ => match last.and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n > 0 => Normalizer::LastChars(n),
                _ => {
                    return Err(Error::InvalidInput {
                        reason: "unknown normalization (expected trim, lowercase, nfc, digits, alnum or lastN)".into(),
                    })
                }
            },
        })
    }
}

impl fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl PartialEq for Normalizer {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

/// Normalization steps applied in order.
///
/// ```
/// use rowseal_core::Normalization;
/// let n = Normalization::parse("trim, lowercase, nfc").unwrap();
/// assert_eq!(n.apply("  Ada@Example.COM "), "ada@example.com");
/// assert_eq!(Normalization::parse("digits, last4").unwrap().apply("123-45-6789"), "6789");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Normalization {
    steps: Vec<Normalizer>,
}

impl Normalization {
    /// No steps: the value is indexed as it is.
    pub fn none() -> Self {
        Self::default()
    }

    /// Steps from a comma-separated list of built-in names.
    pub fn parse(spec: &str) -> Result<Self> {
        let steps = spec
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Normalizer::builtin)
            .collect::<Result<_>>()?;
        Ok(Normalization { steps })
    }

    /// Adds a step at the end.
    pub fn then(mut self, step: Normalizer) -> Self {
        self.steps.push(step);
        self
    }

    /// Applies every step in order.
    ///
    /// Each intermediate value is zeroized as the next step replaces it (the
    /// value is plaintext); the caller owns, and should zeroize, the result.
    pub fn apply(&self, s: &str) -> String {
        let mut out = zeroize::Zeroizing::new(s.to_owned());
        for step in &self.steps {
            out = zeroize::Zeroizing::new(step.apply(&out));
        }
        std::mem::take(&mut *out)
    }

    /// The steps' names, comma-separated (what the schema registry records).
    pub fn describe(&self) -> String {
        self.steps
            .iter()
            .map(Normalizer::name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn every_step_accepts_any_string(s in ".*", n in 0usize..8) {
            let all = Normalization::parse("trim,lowercase,nfc,digits,alnum").unwrap()
                .then(Normalizer::LastChars(n.max(1)));
            let _ = all.apply(&s);
        }
    }

    #[test]
    fn nfc_unifies_composed_and_decomposed() {
        let n = Normalization::parse("nfc, lowercase").unwrap();
        assert_eq!(n.apply("Zoe\u{0301}"), n.apply("zo\u{00e9}"));
    }

    #[test]
    fn names_round_trip() {
        for name in ["trim", "lowercase", "nfc", "digits", "alnum", "last4"] {
            assert_eq!(Normalizer::builtin(name).unwrap().name(), name);
        }
        assert_eq!(Normalizer::builtin("last(2)").unwrap().apply("abcd"), "cd");
        assert!(Normalizer::builtin("last0").is_err());
        assert!(Normalizer::builtin("upper").is_err());
    }

    #[test]
    fn builtin_names_are_what_builtin_accepts() {
        for listed in Normalizer::BUILTIN_NAMES {
            let name = listed.replace('N', "4");
            assert_eq!(Normalizer::builtin(&name).unwrap().name(), name);
        }
        // Every built-in step is listed.
        for step in [
            Normalizer::Trim,
            Normalizer::Lowercase,
            Normalizer::Nfc,
            Normalizer::DigitsOnly,
            Normalizer::AlphanumericOnly,
            Normalizer::LastChars(4),
        ] {
            let name = step.name().replace('4', "N");
            assert!(Normalizer::BUILTIN_NAMES.contains(&name.as_str()), "{name}");
        }
    }

    #[test]
    fn custom_steps_compose() {
        let n = Normalization::parse("trim")
            .unwrap()
            .then(Normalizer::custom("strip-plus", |s| {
                match s.split_once('+') {
                    Some((user, rest)) => match rest.split_once('@') {
                        Some((_, domain)) => format!("{user}@{domain}"),
                        None => s.to_owned(),
                    },
                    None => s.to_owned(),
                }
            }));
        assert_eq!(n.apply(" ada+news@example.com "), "ada@example.com");
        assert_eq!(n.describe(), "trim,strip-plus");
    }
}
