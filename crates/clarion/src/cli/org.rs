//! `clarion org allow-vapi-assistant | disallow-vapi-assistant | show`: the operator's view of
//! an organisation.
//!
//! Every organisation's calls go through the deployment's one Vapi account, so which Vapi
//! assistants an organisation may name in its call assistants (`config.vapi_assistant_id`) is
//! the operator's decision, made here against the database, never through the tenant API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clarion_store::{OrgId, Store};

use crate::config::Overrides;

/// Where the database is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// A TOML configuration file laid over the embedded defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Database URL (overrides `database_url`).
    #[arg(long)]
    database: Option<String>,
}

/// `allow-vapi-assistant` / `disallow-vapi-assistant`.
#[derive(Debug, Args)]
pub struct VapiAssistantArgs {
    /// The organisation's id (printed by `clarion org create`).
    org_id: i64,
    /// The Vapi assistant's id, as Vapi shows it.
    vapi_assistant_id: String,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The organisation's id.
    org_id: i64,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// The longest Vapi assistant id accepted (Vapi's are UUIDs, 36 characters).
const MAX_VAPI_ASSISTANT_ID_CHARS: usize = 100;

async fn open(database: DatabaseArgs) -> anyhow::Result<Store> {
    let overrides = Overrides {
        database_url: database.database,
        ..Overrides::default()
    };
    let config = super::load_config(database.config.as_deref(), overrides)?;
    config.open_store().await
}

/// The organisation, or a usage error when there is none with this id.
async fn organization(store: &Store, org_id: i64) -> anyhow::Result<clarion_store::Organization> {
    store
        .get_organization(OrgId(org_id))
        .await?
        .with_context(|| format!("no organisation with id {org_id}"))
}

/// Adds (`allow`) or removes a Vapi assistant id; prints the organisation as `show` does.
pub async fn allow_vapi_assistant(
    args: VapiAssistantArgs,
    allow: bool,
) -> anyhow::Result<ExitCode> {
    let id = args.vapi_assistant_id.trim();
    let valid = !id.is_empty()
        && id.chars().count() <= MAX_VAPI_ASSISTANT_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        anyhow::bail!("a Vapi assistant id is 1 to 100 letters, digits, '-' or '_'");
    }
    let store = open(args.database).await?;
    let org = organization(&store, args.org_id).await?;
    if allow {
        store
            .allow_vapi_assistant(org.id, id, chrono::Utc::now().timestamp_millis())
            .await?;
    } else if !store.disallow_vapi_assistant(org.id, id).await? {
        eprintln!("that Vapi assistant was not on the organisation's list");
    }
    print_organization(&store, org).await?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Prints the organisation.
pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = open(args.database).await?;
    let org = organization(&store, args.org_id).await?;
    print_organization(&store, org).await?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn print_organization(store: &Store, org: clarion_store::Organization) -> anyhow::Result<()> {
    let vapi_assistants = store.allowed_vapi_assistants(org.id).await?;
    println!(
        "{}",
        serde_json::json!({
            "org_id": org.id.0,
            "name": org.name,
            "vapi_assistants": vapi_assistants,
        })
    );
    Ok(())
}
