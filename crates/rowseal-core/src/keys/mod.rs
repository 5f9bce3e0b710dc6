//! The key hierarchy: root key → tenant and index keys → row keys.

pub(crate) mod hierarchy;
pub(crate) mod row;
pub(crate) mod scoped;

#[cfg(test)]
mod known_answers;
