//! Byte formats, versions 2 (written) and 1 (read). Documented byte by byte
//! in `docs/format.md`.
//!
//! Every row header starts with a format-version byte, so that versions are
//! read side by side; a field envelope's version is its row header's.

pub(crate) mod canonical;
pub(crate) mod field;
pub(crate) mod header;
pub(crate) mod presence;
pub(crate) mod wrapped;
