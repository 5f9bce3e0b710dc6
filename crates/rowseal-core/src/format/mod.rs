//! Byte formats, version 1. Documented byte by byte in `docs/format.md`.
//!
//! Every structure starts with a format-version byte so that a later version can
//! be read beside this one.

pub(crate) mod canonical;
pub(crate) mod field;
pub(crate) mod header;
pub(crate) mod wrapped;
