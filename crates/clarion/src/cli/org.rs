//! `clarion org allow-vapi-assistant | disallow-vapi-assistant | allow-caller-number |
//! disallow-caller-number | show`: the operator's view of an organisation.
//!
//! Every organisation's calls go through the deployment's one Vapi account, and its texts
//! through the deployment's Twilio account, so which Vapi assistants an organisation may name
//! in its call assistants (`config.vapi_assistant_id`), and which numbers (with their Vapi
//! phoneNumberIds) it may call and text from (`/v1/caller-numbers`), is the operator's
//! decision, made here against the database, never through the tenant API. A number, and a
//! phoneNumberId, is allowed to one organisation only: one clinic never calls or texts as
//! another.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clarion_store::{Channel, OrgId, Store, StoreError};

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

/// `allow-caller-number`.
#[derive(Debug, Args)]
pub struct AllowCallerNumberArgs {
    #[command(flatten)]
    number: CallerNumberArgs,
    /// The provider's id for the number: its Vapi phoneNumberId (required for `call`); for
    /// `sms`, optional (set, the organisation's caller number must carry the same).
    #[arg(long)]
    provider_id: Option<String>,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// `disallow-caller-number`.
#[derive(Debug, Args)]
pub struct DisallowCallerNumberArgs {
    #[command(flatten)]
    number: CallerNumberArgs,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// The organisation, the channel and the number.
#[derive(Debug, Args)]
pub struct CallerNumberArgs {
    /// The organisation's id (printed by `clarion org create`).
    org_id: i64,
    /// `call` (through Vapi) or `sms` (through Twilio).
    #[arg(long)]
    channel: String,
    /// The number, in E.164 (`+15555550123`).
    #[arg(long)]
    number: String,
}

impl CallerNumberArgs {
    fn parse(&self) -> anyhow::Result<(Channel, &str)> {
        let channel: Channel = self
            .channel
            .parse()
            .map_err(|_| anyhow::anyhow!("--channel is call or sms"))?;
        clarion_scheduler::definition::validate_e164("number", &self.number)
            .map_err(|_| anyhow::anyhow!("--number is an E.164 number such as +15555550123"))?;
        Ok((channel, &self.number))
    }
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

/// The longest provider id accepted (the API's limit for `provider_id`).
const MAX_PROVIDER_ID_CHARS: usize = 200;

/// Allows a number to the organisation; prints the organisation as `show` does. Refused
/// (non-zero exit) when the number, or the provider id, is allowed to another organisation.
pub async fn allow_caller_number(args: AllowCallerNumberArgs) -> anyhow::Result<ExitCode> {
    let (channel, number) = args.number.parse()?;
    let provider_id = args.provider_id.as_deref().map(str::trim);
    if let Some(id) = provider_id {
        let valid = !id.is_empty()
            && id.chars().count() <= MAX_PROVIDER_ID_CHARS
            && !id.chars().any(char::is_control);
        if !valid {
            anyhow::bail!("--provider-id is 1 to 200 characters, none a control character");
        }
    } else if channel == Channel::Call {
        anyhow::bail!("a call number needs its Vapi phoneNumberId: --provider-id ID");
    }
    let store = open(args.database).await?;
    let org = organization(&store, args.number.org_id).await?;
    let now = chrono::Utc::now().timestamp_millis();
    match store
        .allow_caller_number(org.id, channel, number, provider_id, now)
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict) => {
            store.close().await;
            anyhow::bail!(
                "refused: this number is already allowed on this channel to another \
                 organisation, or this provider id to another number; a number and its \
                 provider id belong to one organisation only (take it off there first: \
                 clarion org disallow-caller-number)"
            );
        }
        Err(other) => return Err(other.into()),
    }
    print_organization(&store, org).await?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Takes a number off the organisation's list; prints the organisation as `show` does. The
/// organisation's caller number stays, but is no longer chosen.
pub async fn disallow_caller_number(args: DisallowCallerNumberArgs) -> anyhow::Result<ExitCode> {
    let (channel, number) = args.number.parse()?;
    let store = open(args.database).await?;
    let org = organization(&store, args.number.org_id).await?;
    if !store
        .disallow_caller_number(org.id, channel, number)
        .await?
    {
        eprintln!("that number was not on the organisation's list for this channel");
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
    let allowed_caller_numbers: Vec<_> = store
        .allowed_caller_numbers(org.id)
        .await?
        .into_iter()
        .map(|allowed| {
            serde_json::json!({
                "channel": allowed.channel.as_str(),
                "number": allowed.number,
                "provider_id": allowed.provider_id,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "org_id": org.id.0,
            "name": org.name,
            "vapi_assistants": vapi_assistants,
            "allowed_caller_numbers": allowed_caller_numbers,
        })
    );
    Ok(())
}
