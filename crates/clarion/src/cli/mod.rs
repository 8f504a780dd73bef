//! Command-line parsing and dispatch.

mod bench;
mod bench_api;
mod bench_engine;
mod bench_soak;
mod demo;
mod enroll;
mod migrate_store;
mod org;
mod serve;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, DevOverrides, LogFormat, Overrides, Role};

pub use serve::{
    dispatcher_config, provider_secrets, scheduler_config, ssrf_policy, twilio_channel, vapi_client,
};

/// Clarion: patient-outreach sequences that end in a signed End of Sequence Report webhook.
#[derive(Debug, Parser)]
#[command(name = "clarion", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the API, the sequence scheduler and the webhook dispatcher (or a part of them:
    /// `--role`).
    Serve {
        /// A TOML configuration file laid over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// What this node runs (overrides `role`): `all` (the default), `api` (the HTTP API
        /// and provider callbacks, no background work) or `worker` (the scheduler and the
        /// dispatcher, no API listener). `api` and `worker` need PostgreSQL.
        #[arg(long, value_enum)]
        role: Option<Role>,
        /// Address to listen on (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Database URL (overrides `database_url`), e.g. sqlite://clarion.db.
        #[arg(long)]
        database: Option<String>,
        /// Development mode: webhook targets on loopback/private addresses and plain http://.
        #[arg(long)]
        dev: bool,
    },
    /// A self-contained tour: server, simulator and a verifying receiver in one process.
    Demo {
        /// Keep the demo's server (API and dashboard) running after the tour, until Ctrl-C,
        /// and print the dashboard's address and the key to sign in with.
        #[arg(long)]
        keep: bool,
    },
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Tools for receivers of the End of Sequence Report webhook.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Benchmarks on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Enrolls every row of a CSV file in a sequence template, through the API.
    Enroll(enroll::EnrollArgs),
    /// Copies a whole installation into a new, empty database of either backend (e.g.
    /// SQLite to PostgreSQL): organisations, API keys, endpoints and their secrets, templates
    /// with every version, assistants, sequences in every state, encounters, history,
    /// suppressions, reports, deliveries and attempts, every id kept. Refuses a target with
    /// any row; prints each table's rows in the source and the target, which must agree.
    /// Stop the source's nodes first; start the target's after, with the secret key printed.
    MigrateStore(migrate_store::MigrateStoreArgs),
    /// Checks the configuration, then asks the configured providers whether they accept its
    /// credentials: Vapi (GET /call?limit=1 and GET /phone-number/{id}) and Twilio (GET of the
    /// account), over the network, read-only. No call is placed and no text sent. Prints one
    /// line per check; exit 0 when every check passes, 1 otherwise.
    Doctor {
        /// A TOML configuration file laid over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Webhook delivery throughput and enqueue-to-receipt latency on loopback.
    Delivery(bench::BenchArgs),
    /// Sequences through the engine and the simulator at full speed, to the report received.
    Engine(bench_engine::EngineBenchArgs),
    /// Enrollments through the public API of a `clarion serve` child, to each report received.
    Api(bench_api::ApiBenchArgs),
    /// A long steady run through the API with a receiver that fails 30 % of attempts: prints
    /// RSS, queue depth and reports behind every minute, and the lost count at the end.
    Soak(bench_soak::SoakBenchArgs),
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Creates an organisation; prints {"org_id": N, "api_key": "..."} (the key is shown once).
    Create {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Database URL (overrides `database_url`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Lets the organisation's call assistants use a Vapi assistant of the deployment's Vapi
    /// account (`config.vapi_assistant_id`). Operator only: tenants cannot change this list.
    AllowVapiAssistant(org::VapiAssistantArgs),
    /// Takes a Vapi assistant off the organisation's list; calls not yet placed with it are
    /// refused.
    DisallowVapiAssistant(org::VapiAssistantArgs),
    /// Lets the organisation call or text from a number (`/v1/caller-numbers`), with its
    /// Vapi phoneNumberId for calls. Operator only: tenants cannot change this list. A number
    /// (and a phoneNumberId) allowed to another organisation is refused.
    AllowCallerNumber(org::AllowCallerNumberArgs),
    /// Takes a number off the organisation's list; its caller number is no longer chosen.
    DisallowCallerNumber(org::DisallowCallerNumberArgs),
    /// Prints the organisation as JSON: id, name, the Vapi assistants and the caller numbers
    /// it may use.
    Show(org::ShowArgs),
}

/// Logs go to standard error, filtered by `RUST_LOG` (default `info`, the database driver's
/// chatter left out), as `format` says:
/// text (colour escape codes only when standard error is a terminal, so a file or a pipe gets
/// plain text) or JSON lines. They never carry payload bodies, phone numbers, transcripts or
/// secrets. The first call wins; later ones change nothing.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;

    // Without RUST_LOG: info, except the database driver's chatter — PostgreSQL's notices
    // (each start's "already exists, skipping") and the pool's line per dead connection it
    // drops, which after a database restart repeats what the loops log once per outage.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "info,{}",
            clarion_store::retry::QUIET_DRIVER_LOGS
        ))
    });
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init(),
    };
}

/// Loads the configuration ([`Config::load`]) and starts the log in its `log_format`, then
/// warns of `CLARION_X__Y` variables that name no section (ignored, probably misspelt).
/// Store options for a benchmark's throwaway database: a key of its own, drawn for the run
/// (no key file beside a database that is deleted anyway, and no warning about one).
pub(crate) fn throwaway_store_options() -> clarion_store::StoreOptions {
    clarion_store::StoreOptions {
        secret_keys: Some(clarion_store::secret_keys::SecretKeys::new(
            clarion_store::secret_keys::SecretKey::generate(),
        )),
        ..clarion_store::StoreOptions::default()
    }
}

pub(crate) fn load_config(
    file: Option<&std::path::Path>,
    overrides: Overrides,
) -> anyhow::Result<Config> {
    let config = Config::load(file, overrides)?;
    init_tracing(config.log_format);
    for variable in crate::config::ignored_setting_like_variables() {
        tracing::warn!(
            variable = %variable,
            "environment variable names no configuration section; ignored"
        );
    }
    Ok(config)
}

/// Runs one command to completion. `Ok` carries the process exit code; `Err` is a usage or
/// environment error (exit code 2).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            role,
            listen,
            database,
            dev,
        } => {
            let overrides = Overrides {
                role,
                listen,
                database_url: database,
                webhooks: dev.then_some(DevOverrides {
                    allow_private_targets: true,
                    allow_http: true,
                }),
            };
            let config = load_config(config.as_deref(), overrides)?;
            runtime()?.block_on(serve::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Org(OrgCommand::Create {
            name,
            config,
            database,
        }) => {
            let overrides = Overrides {
                database_url: database,
                ..Overrides::default()
            };
            let config = load_config(config.as_deref(), overrides)?;
            let name = name.trim().to_owned();
            if name.is_empty() {
                anyhow::bail!("the organisation name must not be empty");
            }
            runtime()?.block_on(async {
                let store = config.open_store().await?;
                let now = chrono::Utc::now().timestamp_millis();
                let created = store.create_org(&name, now).await?;
                #[derive(serde::Serialize)]
                struct Created {
                    org_id: i64,
                    api_key: String,
                }
                println!(
                    "{}",
                    serde_json::to_string(&Created {
                        org_id: created.id.0,
                        api_key: created.api_key.expose().to_owned(),
                    })?
                );
                store.close().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Org(OrgCommand::AllowVapiAssistant(args)) => {
            runtime()?.block_on(org::allow_vapi_assistant(args, true))
        }
        Command::Org(OrgCommand::DisallowVapiAssistant(args)) => {
            runtime()?.block_on(org::allow_vapi_assistant(args, false))
        }
        Command::Org(OrgCommand::AllowCallerNumber(args)) => {
            runtime()?.block_on(org::allow_caller_number(args))
        }
        Command::Org(OrgCommand::DisallowCallerNumber(args)) => {
            runtime()?.block_on(org::disallow_caller_number(args))
        }
        Command::Org(OrgCommand::Show(args)) => runtime()?.block_on(org::show(args)),
        Command::Webhook(command) => {
            init_tracing(LogFormat::Text);
            webhook::run(command)
        }
        Command::Demo { keep } => {
            runtime()?.block_on(demo::run(keep))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Delivery(args)) => {
            runtime()?.block_on(bench::delivery(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Engine(args)) => {
            runtime()?.block_on(bench_engine::engine(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Api(args)) => {
            init_tracing(LogFormat::Text);
            runtime()?.block_on(bench_api::api(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Soak(args)) => {
            init_tracing(LogFormat::Text);
            runtime()?.block_on(bench_soak::soak(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Enroll(args) => {
            init_tracing(LogFormat::Text);
            runtime()?.block_on(enroll::run(args))
        }
        Command::MigrateStore(args) => runtime()?.block_on(migrate_store::run(args)),
        Command::Doctor { config } => runtime()?.block_on(doctor(config)),
    }
}

/// `clarion doctor`: one line per check on standard output.
async fn doctor(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    let mut report = |ok: bool, message: &str| {
        all_ok &= ok;
        println!("{} {message}", if ok { "ok  " } else { "FAIL" });
    };
    let config = match load_config(config.as_deref(), Overrides::default()) {
        Ok(config) => {
            report(true, "the configuration loads and is consistent");
            config
        }
        Err(error) => {
            report(false, &format!("{error:#}"));
            return Ok(ExitCode::from(1));
        }
    };
    report(
        true,
        &format!(
            "calls through the {}, SMS through the {}",
            format!("{:?}", config.channels.call).to_lowercase(),
            format!("{:?}", config.channels.sms).to_lowercase()
        ),
    );
    match serve::vapi_client(&config)? {
        Some(vapi) => {
            for check in vapi.check().await {
                report(check.ok, &check.message);
            }
        }
        None => report(
            true,
            "no Vapi credentials needed (calls through the simulator)",
        ),
    }
    match serve::twilio_channel(&config)? {
        Some(twilio) => {
            let check = twilio.client.check().await;
            report(check.ok, &check.message);
        }
        None => report(
            true,
            "no Twilio credentials needed (texts through the simulator)",
        ),
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
