//! `clarion webhook verify` and `clarion webhook listen`.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use clarion_webhooks::{Secret, Verifier, WebhookHeaders};

use crate::receiver;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Verifies one delivery's signature. Exit code 0 when valid, 1 when not.
    Verify {
        /// The endpoint's signing secret (`whsec_...`).
        #[arg(long, env = "CLARION_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The `webhook-id` header.
        #[arg(long)]
        id: String,
        /// The `webhook-timestamp` header (Unix seconds).
        #[arg(long)]
        timestamp: String,
        /// The `webhook-signature` header (one or more space-separated `v1,...` entries).
        #[arg(long)]
        signature: String,
        /// Check the timestamp against this instant (Unix seconds) instead of the clock, to
        /// verify a delivery recorded earlier.
        #[arg(long)]
        now: Option<i64>,
        /// The raw request body; read from standard input when absent.
        body_file: Option<PathBuf>,
    },
    /// Runs a local receiver on 127.0.0.1 that verifies and prints every report it gets.
    Listen {
        /// The port to listen on (0 picks a free one; the address is printed first).
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// The endpoint's signing secret (`whsec_...`). Repeat it to accept a rotated secret.
        #[arg(
            long,
            env = "CLARION_WEBHOOK_SECRET",
            hide_env_values = true,
            required = true
        )]
        secret: Vec<String>,
    },
}

pub fn run(command: WebhookCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhookCommand::Verify {
            secret,
            id,
            timestamp,
            signature,
            now,
            body_file,
        } => {
            let secret: Secret = secret.parse().context("--secret is not a whsec_ secret")?;
            let body = match body_file {
                Some(path) => std::fs::read(&path)
                    .with_context(|| format!("reading the body from {}", path.display()))?,
                None => {
                    let mut body = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut body)
                        .context("reading the body from stdin")?;
                    body
                }
            };
            let headers = WebhookHeaders {
                id: Some(&id),
                timestamp: Some(&timestamp),
                signature: Some(&signature),
            };
            let verifier = Verifier::new(secret);
            let outcome = match now {
                Some(now) => verifier.verify_at(&headers, &body, now),
                None => verifier.verify(&headers, &body),
            };
            Ok(match outcome {
                Ok(()) => {
                    println!("valid");
                    ExitCode::SUCCESS
                }
                Err(reason) => {
                    println!("invalid: {reason}");
                    ExitCode::from(1)
                }
            })
        }
        WebhookCommand::Listen { port, secret } => {
            let secrets = secret
                .iter()
                .map(|s| s.parse::<Secret>())
                .collect::<Result<Vec<_>, _>>()
                .context("--secret is not a whsec_ secret")?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(listen(port, Verifier::with_secrets(secrets)))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn listen(port: u16, verifier: Verifier) -> anyhow::Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let (router, mut reports) = receiver::router(verifier);
    println!("listening on http://{}", listener.local_addr()?);

    let printer = tokio::spawn(async move {
        while let Some(received) = reports.recv().await {
            println!("{}", receiver::summarize(&received));
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    printer.abort();
    Ok(())
}
