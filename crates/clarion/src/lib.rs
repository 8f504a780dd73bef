//! The `clarion` binary's library: command-line commands, configuration, and the pieces they
//! share.
//!
//! Kept as a library so that integration tests and other commands reuse the same receiver,
//! configuration and wiring the command line uses.

pub mod cli;
pub mod config;
pub mod receiver;
