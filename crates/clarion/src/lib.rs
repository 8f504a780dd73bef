//! The `clarion` binary's library: command-line commands and the pieces they share.
//!
//! Kept as a library so that integration tests and future commands (the demo, for one) reuse
//! the same receiver and report summary code the command line uses.

pub mod cli;
pub mod receiver;
