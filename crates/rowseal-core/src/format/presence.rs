//! The set of a row's present (non-NULL) encrypted fields, by logical name:
//! what a format v2 row key binds, so that a field NULLed or filled outside
//! rowseal, or a field mixed in from another write of the row, fails to open.

use std::fmt;

use crate::error::{Error, Result};
use crate::format::canonical::push_lp;

/// The logical names of the encrypted fields of one row that are present
/// (non-NULL), as a canonical set: sorted (by their UTF-8 bytes), without
/// duplicates, at most 255 names.
///
/// A format v2 row key is derived over [`canonical_bytes`](Self::canonical_bytes),
/// and the row header keeps [`len`](Self::len): opening a row with another set
/// fails, with [`Error::FieldPresence`] when the count differs (a field was
/// NULLed or filled) and [`Error::Decrypt`] when only the names do.
///
/// Binding names rather than positions keeps old rows valid when encrypted
/// fields are reordered or one is added (a new field is NULL, so absent, in
/// every old row). Logical names, not columns: a column may be renamed.
///
/// ```
/// use rowseal_core::FieldSet;
/// let set = FieldSet::new(["ssn", "email", "ssn"])?;
/// assert_eq!(set.len(), 2);
/// assert!(set.contains("email") && !set.contains("name"));
/// assert_eq!(set.iter().collect::<Vec<_>>(), ["email", "ssn"]);
/// // The order given does not matter.
/// assert_eq!(set, FieldSet::new(["email", "ssn"])?);
/// // count (1 byte), then each name as u32 BE length || bytes, sorted.
/// assert_eq!(
///     set.canonical_bytes(),
///     b"\x02\x00\x00\x00\x05email\x00\x00\x00\x03ssn"
/// );
/// assert_eq!(FieldSet::empty().canonical_bytes(), [0]);
/// # Ok::<(), rowseal_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FieldSet {
    names: Vec<Box<str>>,
    canonical: Vec<u8>,
}

impl FieldSet {
    /// The set of `names` (in any order; duplicates count once). More than
    /// 255 distinct names is [`Error::InvalidInput`], as is a name longer
    /// than 4 GiB.
    pub fn new<'a, I: IntoIterator<Item = &'a str>>(names: I) -> Result<Self> {
        let mut names: Vec<&str> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        // The v2 header stores the count in one byte.
        let count = u8::try_from(names.len()).map_err(|_| Error::InvalidInput {
            reason: "more than 255 present encrypted fields in one row".into(),
        })?;
        let mut canonical =
            Vec::with_capacity(1 + names.iter().map(|n| 4 + n.len()).sum::<usize>());
        canonical.push(count);
        for name in &names {
            push_lp(&mut canonical, name.as_bytes())?;
        }
        Ok(FieldSet {
            names: names.into_iter().map(Box::from).collect(),
            canonical,
        })
    }

    /// The empty set: a row whose encrypted fields are all NULL.
    pub fn empty() -> Self {
        FieldSet {
            names: Vec::new(),
            canonical: vec![0],
        }
    }

    /// How many names (0 to 255).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The count as the header stores it.
    pub(crate) fn count(&self) -> u8 {
        // At most 255 by construction.
        u8::try_from(self.names.len()).unwrap_or(u8::MAX)
    }

    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.names.binary_search_by(|n| (**n).cmp(name)).is_ok()
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }

    /// The canonical encoding the row key binds: the count (one byte), then
    /// each name, in sorted order, as a 4-byte big-endian length and its
    /// bytes.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.canonical
    }
}

impl Default for FieldSet {
    fn default() -> Self {
        FieldSet::empty()
    }
}

/// Field names are not secret (they are the model's field names).
impl fmt::Debug for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_255_names() {
        let names: Vec<String> = (0..256).map(|i| format!("f{i}")).collect();
        let refs = || names.iter().map(String::as_str);
        assert!(FieldSet::new(refs().take(255)).is_ok());
        assert!(matches!(
            FieldSet::new(refs()),
            Err(Error::InvalidInput { .. })
        ));
        // Duplicates count once.
        assert_eq!(
            FieldSet::new(refs().take(255).chain(refs().take(10)))
                .unwrap()
                .len(),
            255
        );
    }

    #[test]
    fn name_boundaries_are_unambiguous() {
        let a = FieldSet::new(["ab", "c"]).unwrap();
        let b = FieldSet::new(["a", "bc"]).unwrap();
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(FieldSet::default(), FieldSet::new([]).unwrap());
    }
}
