//! Command-line parsing and dispatch.

mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Clarion: patient-outreach sequences that end in a signed End of Sequence Report webhook.
#[derive(Debug, Parser)]
#[command(name = "clarion", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tools for receivers of the End of Sequence Report webhook.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
}

/// Logs go to standard error, filtered by `RUST_LOG` (default `info`). They never carry
/// payload bodies, phone numbers, transcripts or secrets.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one command to completion. `Ok` carries the process exit code; `Err` is a usage or
/// environment error (exit code 2).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Webhook(command) => webhook::run(command),
    }
}
