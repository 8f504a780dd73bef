//! What a copy of a whole installation reports ([`crate::Store::copy_into`]).

/// A verified copy: each table's rows in the source and in the target (equal, or the copy
/// would have been refused and rolled back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The source's backend: `sqlite` or `postgres`.
    pub from: &'static str,
    /// The target's backend.
    pub to: &'static str,
    /// Every copied table, in the order it was written (parents first).
    pub tables: Vec<TableCount>,
    /// The id of the key the target's webhook endpoint secrets are now sealed under (a
    /// public name, safe to print): the target's nodes must be started with that key.
    pub sealed_under: String,
}

/// One table's rows on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub source: u64,
    pub target: u64,
}
