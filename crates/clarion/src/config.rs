//! Configuration: the embedded, commented defaults (`config.default.toml`), then an optional
//! file, then `CLARION_*` environment variables (`__` for nesting), then flags; then checks.
//!
//! **The environment layer** ([`EnvSettings`]). Only the documented names are settings:
//! `CLARION_<KEY>` for a top-level key ([`TOP_LEVEL_KEYS`]) and `CLARION_<SECTION>__<KEY>` for
//! a key of a section ([`SECTIONS`]). Any other `CLARION_*` variable (`CLARION_DIR` from a
//! user's shell, the test suite's `CLARION_WEBHOOK_SECRET`) is not configuration and is
//! ignored; a misspelt key inside a real section (`CLARION_WEBHOOKS__RETRY_SCHEDUL`) is still
//! refused, by the sections' `deny_unknown_fields`. Values are kept as the text they are: an
//! environment variable has no type, so `CLARION_TWILIO__FROM_NUMBER=+15555550001` is the
//! string it looks like, and numeric and boolean settings read their text leniently
//! (`extract_lossy`). Only a value written as a TOML array or table (`["0s", "1s"]`) is parsed
//! as one.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clarion_store::secret_keys::{SecretKey, SecretKeys};
use clarion_store::{Store, StoreOptions};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

/// The defaults, every key commented.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config.default.toml");

/// The keys outside any section: `CLARION_<KEY>` sets one of these (module docs).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "role",
    "listen",
    "database_url",
    "metrics_token",
    "admin_listen",
    "log_format",
    "secret_key",
    "previous_secret_keys",
];

/// The sections: `CLARION_<SECTION>__<KEY>` sets a key of one of these (module docs).
pub const SECTIONS: &[&str] = &[
    "database",
    "server",
    "webhooks",
    "channels",
    "compliance",
    "simulator",
    "vapi",
    "twilio",
    "llm",
    "ui",
];

/// Whether an environment variable's key (after `CLARION_`, lower case, `__` read as `.`)
/// names a setting: a top-level key, or anything inside a known section (a typo there is
/// refused later, by the section).
fn is_setting(key: &str) -> bool {
    match key.split_once('.') {
        None => TOP_LEVEL_KEYS.contains(&key),
        Some((section, _)) => SECTIONS.contains(&section),
    }
}

fn clarion_env() -> Env {
    Env::prefixed("CLARION_").split("__")
}

/// `CLARION_*` variables shaped like a section's setting (`CLARION_X__Y`) whose section does
/// not exist: ignored like any other non-setting, but worth a warning, since it is probably a
/// misspelt section. Names only; values are never shown.
pub fn ignored_setting_like_variables() -> Vec<String> {
    clarion_env()
        .iter()
        .filter(|(key, _)| key.as_str().contains('.') && !is_setting(key.as_str()))
        .map(|(key, _)| format!("CLARION_{}", key.as_str().replace('.', "__").to_uppercase()))
        .collect()
}

/// The environment layer (module docs): the `CLARION_*` variables that are settings, each
/// value kept as text unless written as a TOML array or table.
struct EnvSettings(Env);

impl EnvSettings {
    fn new() -> Self {
        // The filter sees the name as written (upper case); `iter` lower-cases it afterwards.
        Self(clarion_env().filter(|key| is_setting(&key.as_str().to_ascii_lowercase())))
    }
}

impl Provider for EnvSettings {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, text) in self.0.iter() {
            let value = match text.parse::<Value>() {
                Ok(parsed @ (Value::Array(..) | Value::Dict(..) | Value::String(..))) => parsed,
                // Numbers, booleans and characters stay the text they were written as.
                _ => Value::from(text),
            };
            let path: Vec<&str> = key.as_str().split('.').collect();
            insert_at(&mut dict, &path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Puts `value` at `path` in `dict`, creating the tables on the way (a later variable wins).
fn insert_at(dict: &mut Dict, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert((*first).to_owned(), value);
        return;
    }
    let entry = dict
        .entry((*first).to_owned())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert_at(inner, rest, value);
    }
}

/// How the log is written (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colour only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What a `clarion serve` node runs (`role`, `--role`, `CLARION_ROLE`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The API and the background work: one process does everything.
    #[default]
    All,
    /// The HTTP API (provider callbacks, `/metrics`, `/healthz` included), no background loops.
    Api,
    /// The sequence scheduler and the webhook dispatcher, no API listener (`/metrics` and
    /// `/healthz` on `admin_listen` when it is set).
    Worker,
}

impl Role {
    /// Whether this node serves the API on `listen`.
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    /// Whether this node runs the scheduler's loops and the webhook dispatcher.
    pub fn runs_loops(self) -> bool {
        self != Role::Api
    }
}

/// An operator token shorter than this is refused: it guards deployment-wide volumes and can
/// be guessed at over the network.
const MIN_METRICS_TOKEN_CHARS: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What this node runs: `all` (the default), `api` or `worker` (PostgreSQL only).
    #[serde(default)]
    pub role: Role,
    pub listen: SocketAddr,
    pub database_url: String,
    /// When set, `/metrics` answers only `Authorization: Bearer <metrics_token>`
    /// (`CLARION_METRICS_TOKEN`).
    #[serde(default)]
    pub metrics_token: Option<clarion_server::OperatorToken>,
    /// When set, `/metrics` (and `/healthz`) are served on this address only, and the public
    /// listener answers 404 for `/metrics`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Seals webhook endpoint secrets at rest (`CLARION_SECRET_KEY`: 32 random bytes in
    /// base64). Required for PostgreSQL; on SQLite, unset means a key file beside the database.
    #[serde(default)]
    pub secret_key: Option<SecretKeySetting>,
    /// Earlier keys, comma-separated, that still open secrets during a rotation
    /// (`CLARION_PREVIOUS_SECRET_KEYS`).
    #[serde(default)]
    pub previous_secret_keys: Option<PreviousSecretKeys>,
    /// `text` (the default) or `json` (one object per line).
    #[serde(default)]
    pub log_format: LogFormat,
    pub database: DatabaseConfig,
    pub server: ServerConfig,
    pub webhooks: WebhooksConfig,
    pub channels: ChannelsConfig,
    pub compliance: ComplianceConfig,
    pub simulator: SimulatorConfig,
    pub vapi: VapiConfig,
    pub twilio: TwilioConfig,
    pub llm: LlmConfig,
    pub ui: UiConfig,
}

/// `secret_key`: parsed when the configuration loads; `Debug` shows only the key's id.
#[derive(Debug, Clone)]
pub struct SecretKeySetting(pub SecretKey);

impl<'de> Deserialize<'de> for SecretKeySetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // The error names the expected form, never the value given.
        text.parse()
            .map(Self)
            .map_err(|error| serde::de::Error::custom(format!("secret_key: {error}")))
    }
}

/// `previous_secret_keys`: comma-separated keys, as one environment variable can carry them.
#[derive(Debug, Clone, Default)]
pub struct PreviousSecretKeys(pub Vec<SecretKey>);

impl<'de> Deserialize<'de> for PreviousSecretKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<SecretKey>, _>>()
            .map(Self)
            .map_err(|error| serde::de::Error::custom(format!("previous_secret_keys: {error}")))
    }
}

/// The model behind LLM SMS assistants: an OpenAI-compatible chat-completions API. Used only
/// when `api_key` is set (`CLARION_LLM__API_KEY`) and for assistants whose config has
/// `llm.system_prompt`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<String>,
    pub timeout: HumanDuration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Twilio SMS (`[channels] sms = "twilio"`). Credentials come from the environment
/// (`CLARION_TWILIO__ACCOUNT_SID`, `CLARION_TWILIO__AUTH_TOKEN`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub base_url: String,
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub auth_token: Option<String>,
    /// Send through this Messaging Service (`MG…`), or else…
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// …from this number (E.164).
    #[serde(default)]
    pub from_number: Option<String>,
    /// The address Twilio reaches this Clarion at (`https://clarion.example.org`): status
    /// callbacks go there, and signatures are checked against it (behind a proxy, the
    /// address Twilio used is not the one Clarion sees).
    #[serde(default)]
    pub public_base_url: Option<String>,
    pub request_timeout: HumanDuration,
    /// Organisations' own senders, by organisation id: a number (E.164) or a Messaging
    /// Service sid (`MG…`). Organisations not listed share the sender above. An inbound text
    /// reaches only a conversation begun from the number or service it was sent to.
    #[serde(default)]
    pub senders: std::collections::BTreeMap<String, String>,
    /// Texts sent per second per sender (Twilio's rate for a long code is 1 per second);
    /// texts beyond it wait their turn.
    pub messages_per_second: f64,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |value: &Option<String>| if value.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("TwilioConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &set(&self.auth_token))
            .field("messaging_service_sid", &self.messaging_service_sid)
            .field("from_number", &set(&self.from_number))
            .field("public_base_url", &self.public_base_url)
            .field("request_timeout", &self.request_timeout)
            .field("senders", &self.senders.len())
            .field("messages_per_second", &self.messages_per_second)
            .finish()
    }
}

/// Vapi (`[channels] call = "vapi"`). Credentials come from the environment
/// (`CLARION_VAPI__API_KEY`, `CLARION_VAPI__SERVER_SECRET`) rather than a file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VapiConfig {
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// What Vapi sends in `x-vapi-secret` (or `Authorization: Bearer`) on every callback.
    #[serde(default)]
    pub server_secret: Option<String>,
    /// Vapi's HMAC credential's `secretKey`; when set, callbacks must be signed with it.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// The credential's `signatureHeader` and `timestampHeader`.
    pub hmac_signature_header: String,
    pub hmac_timestamp_header: String,
    /// How far a signed callback's timestamp may be from now.
    pub hmac_window: HumanDuration,
    pub request_timeout: HumanDuration,
    /// How long to wait for a call's end-of-call report before reading the call back.
    pub end_of_call_timeout: HumanDuration,
    /// How long after placing a call to stop waiting for its end: a call neither reported
    /// nor readable by then ends `failed`.
    pub give_up_after: HumanDuration,
    /// The Vapi account's concurrent-call slots: never more calls in progress than this;
    /// calls due beyond them wait.
    pub max_concurrent_calls: u32,
    /// Slots outbound calls leave free for inbound calls.
    pub reserve_for_inbound: u32,
}

impl std::fmt::Debug for VapiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |value: &Option<String>| if value.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("VapiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &set(&self.api_key))
            .field("phone_number_id", &self.phone_number_id)
            .field("server_secret", &set(&self.server_secret))
            .field("hmac_secret", &set(&self.hmac_secret))
            .field("hmac_signature_header", &self.hmac_signature_header)
            .field("hmac_timestamp_header", &self.hmac_timestamp_header)
            .field("hmac_window", &self.hmac_window)
            .field("request_timeout", &self.request_timeout)
            .field("end_of_call_timeout", &self.end_of_call_timeout)
            .field("give_up_after", &self.give_up_after)
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .field("reserve_for_inbound", &self.reserve_for_inbound)
            .finish()
    }
}

/// The database connections (`[database]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connections in the node's pool.
    pub max_connections: u32,
    /// PostgreSQL: how long a query waits for a connection before failing as unavailable
    /// (an API request is then answered 503).
    pub acquire_timeout: HumanDuration,
    /// `clarion serve`: how long to keep trying at start while the database cannot be
    /// reached (refused, timed out, starting up) before giving up.
    pub start_timeout: HumanDuration,
    /// PostgreSQL: whether commits that make work due wake the other nodes (`NOTIFY`).
    pub notify: bool,
}

/// The HTTP listeners' limits against slow or hostile clients (`[server]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// From the accept (or the first byte after an idle spell) to the end of a request's head.
    pub header_timeout: HumanDuration,
    /// From a request's head to the end of its body; missed: 408 and the connection closed.
    pub body_timeout: HumanDuration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: HumanDuration,
    /// Connections served at once, per listener; more wait unaccepted.
    pub max_connections: usize,
}

impl ServerConfig {
    /// The limits as the server takes them.
    pub fn limits(&self) -> clarion_server::ServerLimits {
        clarion_server::ServerLimits {
            header_timeout: self.header_timeout.0,
            body_timeout: self.body_timeout.0,
            idle_timeout: self.idle_timeout.0,
            max_connections: self.max_connections,
        }
    }
}

/// The operator dashboard (`[ui]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// A session unused this long is over.
    pub session_idle_timeout: HumanDuration,
    /// A session is over this long after sign-in, however active.
    pub session_max_lifetime: HumanDuration,
    /// Failed sign-ins allowed at once per client address...
    pub failed_sign_in_burst: u32,
    /// ...and that many again per this window.
    pub failed_sign_in_window: HumanDuration,
}

impl UiConfig {
    /// The settings as the server takes them.
    pub fn settings(&self) -> clarion_server::ui::UiSettings {
        clarion_server::ui::UiSettings {
            idle_timeout: self.session_idle_timeout.0,
            max_lifetime: self.session_max_lifetime.0,
            failed_sign_ins: clarion_server::rate_limit::Rule {
                burst: self.failed_sign_in_burst.max(1),
                window: self.failed_sign_in_window.0,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    pub max_contacts_per_day: u32,
    pub max_contacts_per_week: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub retry_schedule: Vec<HumanDuration>,
    pub attempt_timeout: HumanDuration,
    pub allow_private_targets: bool,
    pub allow_http: bool,
    pub retry_after_max: HumanDuration,
    pub max_in_flight: usize,
    pub max_in_flight_per_endpoint: u32,
    pub min_in_flight_per_endpoint: u32,
    pub max_in_flight_per_organization: u32,
    pub poll_interval: HumanDuration,
    pub lease_margin: HumanDuration,
    /// Ports endpoints may use besides 443 and 80 (any port under `allow_private_targets`).
    pub allowed_ports: Vec<u16>,
    /// Keep the first 256 bytes of each answer with its attempt.
    pub store_response_excerpt: bool,
    /// An endpoint whose every attempt has failed for this long is disabled.
    pub disable_after: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallChannel {
    Simulator,
    Vapi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsChannel {
    Simulator,
    Twilio,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    pub call: CallChannel,
    pub sms: SmsChannel,
    /// How long (real time) an encounter may stay committed without its provider's answer
    /// recorded before Clarion takes the node that committed it for dead and reconciles it.
    pub reconcile_after: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    pub time_scale: f64,
    pub from_number: String,
}

/// A duration written the humantime way (`"5s"`, `"2h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration like \"5s\" or \"2h\": {e}"
                ))
            })
    }
}

/// Command-line overrides, applied last.
#[derive(Debug, Default, serde::Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<DevOverrides>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct DevOverrides {
    pub allow_private_targets: bool,
    pub allow_http: bool,
}

impl Config {
    /// How to open the store this configuration names (the key ring, when a key is set).
    pub fn store_options(&self) -> StoreOptions {
        let secret_keys = self.secret_key.as_ref().map(|current| {
            SecretKeys::new(current.0.clone()).with_previous(
                self.previous_secret_keys
                    .iter()
                    .flat_map(|previous| previous.0.iter().cloned()),
            )
        });
        StoreOptions {
            secret_keys,
            max_connections: self.database.max_connections,
            acquire_timeout: self.database.acquire_timeout.0,
            notify: self.database.notify,
            ..StoreOptions::default()
        }
    }

    /// Opens the store this configuration names.
    pub async fn open_store(&self) -> anyhow::Result<Store> {
        Store::connect_with(&self.database_url, self.store_options())
            .await
            .context("opening the database")
    }

    /// Loads the layers and checks the result.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULT_CONFIG));
        if let Some(file) = file {
            if !file.exists() {
                bail!("the configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment
            .merge(EnvSettings::new())
            .merge(Serialized::defaults(overrides));
        // Lossy: numeric and boolean settings read the environment's text (module docs).
        let config: Config = figment.extract_lossy().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let webhooks = &self.webhooks;
        if webhooks.retry_schedule.is_empty() {
            bail!("webhooks.retry_schedule needs at least one entry");
        }
        if webhooks.attempt_timeout.0.is_zero() {
            bail!("webhooks.attempt_timeout must be more than zero");
        }
        if webhooks.max_in_flight == 0
            || webhooks.max_in_flight_per_endpoint == 0
            || webhooks.min_in_flight_per_endpoint == 0
            || webhooks.max_in_flight_per_organization == 0
        {
            bail!(
                "webhooks.max_in_flight, max_in_flight_per_endpoint, min_in_flight_per_endpoint and max_in_flight_per_organization must be at least 1"
            );
        }
        if webhooks.allowed_ports.contains(&0) {
            bail!("webhooks.allowed_ports cannot contain 0");
        }
        if self.channels.reconcile_after.0 < std::time::Duration::from_secs(1) {
            bail!("channels.reconcile_after must be at least 1s");
        }
        if self.database.max_connections == 0 || self.database.acquire_timeout.0.is_zero() {
            bail!("database.max_connections and database.acquire_timeout must be more than zero");
        }
        if self.role != Role::All && !is_postgres(&self.database_url) {
            // One process owns a SQLite file: split, the API node's work would wait for the
            // worker's poll (no wake-ups cross processes) and both would queue on one writer.
            bail!(
                "role = \"{}\" needs a PostgreSQL database_url; on SQLite one process runs everything (role = \"all\")",
                format!("{:?}", self.role).to_lowercase()
            );
        }
        if webhooks.disable_after.0.is_zero() {
            bail!("webhooks.disable_after must be more than zero");
        }
        if webhooks.poll_interval.0.is_zero() {
            bail!("webhooks.poll_interval must be more than zero");
        }
        if let Some(token) = &self.metrics_token
            && token.expose().trim().chars().count() < MIN_METRICS_TOKEN_CHARS
        {
            bail!("metrics_token must be at least {MIN_METRICS_TOKEN_CHARS} characters");
        }
        if self.admin_listen.is_some_and(|admin| admin == self.listen) {
            bail!("admin_listen must differ from listen");
        }
        if !(self.simulator.time_scale.is_finite() && self.simulator.time_scale > 0.0) {
            bail!("simulator.time_scale must be a positive number");
        }
        if self.vapi.max_concurrent_calls == 0
            || self.vapi.reserve_for_inbound >= self.vapi.max_concurrent_calls
        {
            bail!(
                "vapi.max_concurrent_calls must be at least 1 and more than vapi.reserve_for_inbound"
            );
        }
        if !(self.twilio.messages_per_second.is_finite() && self.twilio.messages_per_second > 0.0) {
            bail!("twilio.messages_per_second must be a positive number");
        }
        if self.channels.call == CallChannel::Vapi {
            let vapi = &self.vapi;
            let blank =
                |value: &Option<String>| value.as_deref().is_none_or(|v| v.trim().is_empty());
            for (key, value) in [
                ("vapi.api_key", &vapi.api_key),
                ("vapi.phone_number_id", &vapi.phone_number_id),
            ] {
                if blank(value) {
                    bail!("channels.call = \"vapi\" needs {key}");
                }
            }
            if blank(&vapi.server_secret) && blank(&vapi.hmac_secret) {
                bail!(
                    "channels.call = \"vapi\" needs vapi.hmac_secret (recommended) or vapi.server_secret"
                );
            }
            if vapi.hmac_window.0.is_zero()
                || vapi.hmac_signature_header.trim().is_empty()
                || vapi.hmac_timestamp_header.trim().is_empty()
            {
                bail!("vapi.hmac_window and the vapi.hmac_*_header names must not be empty");
            }
            if !(vapi.base_url.starts_with("https://") || vapi.base_url.starts_with("http://")) {
                bail!("vapi.base_url must be an http(s) URL");
            }
        }
        if self.channels.sms == SmsChannel::Twilio {
            let twilio = &self.twilio;
            for (key, value) in [
                ("twilio.account_sid", &twilio.account_sid),
                ("twilio.auth_token", &twilio.auth_token),
                ("twilio.public_base_url", &twilio.public_base_url),
            ] {
                if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    bail!("channels.sms = \"twilio\" needs {key}");
                }
            }
            if twilio.messaging_service_sid.is_none() && twilio.from_number.is_none() {
                bail!(
                    "channels.sms = \"twilio\" needs twilio.messaging_service_sid or twilio.from_number"
                );
            }
            for (org, sender) in &twilio.senders {
                if org.parse::<i64>().map_or(true, |id| id <= 0) {
                    bail!("twilio.senders: keys are organisation ids (positive integers)");
                }
                let number = sender.starts_with('+')
                    && sender.len() >= 8
                    && sender.len() <= 16
                    && sender[1..].bytes().all(|b| b.is_ascii_digit());
                let service = sender.starts_with("MG")
                    && sender.len() == 34
                    && sender[2..].bytes().all(|b| b.is_ascii_hexdigit());
                if !number && !service {
                    bail!(
                        "twilio.senders.{org} must be an E.164 number or a Messaging Service sid (MG…)"
                    );
                }
            }
        }
        Ok(())
    }
}

/// Whether `url` names a PostgreSQL database.
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's error type
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_load_and_match_the_documented_contract() {
        let config = figment::Figment::from(Toml::string(DEFAULT_CONFIG))
            .extract::<Config>()
            .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url, "sqlite://clarion.db");
        let schedule: Vec<u64> = config
            .webhooks
            .retry_schedule
            .iter()
            .map(|d| d.0.as_secs())
            .collect();
        assert_eq!(schedule, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(config.webhooks.attempt_timeout.0, Duration::from_secs(15));
        assert!(!config.webhooks.allow_private_targets);
        assert_eq!(config.channels.call, CallChannel::Simulator);
        assert!((config.simulator.time_scale - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn file_then_environment_then_flags_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "clarion.toml",
                "listen = \"127.0.0.1:9000\"\n[webhooks]\nattempt_timeout = \"3s\"\n",
            )?;
            jail.set_env("CLARION_WEBHOOKS__ATTEMPT_TIMEOUT", "4s");
            jail.set_env("CLARION_WEBHOOKS__RETRY_SCHEDULE", "[\"0s\", \"1s\"]");
            jail.set_env("CLARION_WEBHOOK_SECRET", "not configuration");
            let overrides = Overrides {
                database_url: Some("sqlite://other.db".into()),
                webhooks: Some(DevOverrides {
                    allow_private_targets: true,
                    allow_http: true,
                }),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("clarion.toml")), overrides).unwrap();
            assert_eq!(config.listen.port(), 9000);
            assert_eq!(config.webhooks.attempt_timeout.0, Duration::from_secs(4));
            assert_eq!(config.webhooks.retry_schedule.len(), 2);
            assert_eq!(config.database_url, "sqlite://other.db");
            assert!(config.webhooks.allow_private_targets);
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLARION_WEBHOOKS__ATTEMPT_TIMEOUT", "soon");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.to_lowercase().contains("attempt_timeout"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[webhooks]\nretry_schedul = []\n")?;
            let error = format!(
                "{:#}",
                Config::load(Some(Path::new("typo.toml")), Overrides::default()).unwrap_err()
            );
            assert!(error.contains("retry_schedul"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn vapi_calls_need_their_credentials_from_the_environment_and_never_print_them() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLARION_CHANNELS__CALL", "vapi");
            jail.set_env("CLARION_VAPI__API_KEY", "vapi-private-key");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("vapi.phone_number_id"), "{error}");
            jail.set_env("CLARION_VAPI__PHONE_NUMBER_ID", "pn_1");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("vapi.hmac_secret"), "{error}");
            jail.set_env("CLARION_VAPI__HMAC_SECRET", "vapi-hmac-secret-value");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert!(!format!("{config:?}").contains("vapi-hmac-secret-value"));
            assert_eq!(config.vapi.hmac_window.0, Duration::from_secs(300));
            jail.set_env("CLARION_VAPI__SERVER_SECRET", "vapi-callback-secret");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.channels.call, CallChannel::Vapi);
            assert_eq!(config.vapi.api_key.as_deref(), Some("vapi-private-key"));
            assert_eq!(config.vapi.base_url, "https://api.vapi.ai");
            let printed = format!("{config:?}");
            assert!(
                !printed.contains("vapi-private-key") && !printed.contains("vapi-callback-secret"),
                "{printed}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_metrics_token_comes_from_the_environment_is_never_printed_and_not_too_short() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, Overrides::default()).unwrap();
            assert!(config.metrics_token.is_none() && config.admin_listen.is_none());
            jail.set_env("CLARION_METRICS_TOKEN", "short");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("metrics_token"), "{error}");
            jail.set_env("CLARION_METRICS_TOKEN", "operator-token-0123456789");
            jail.set_env("CLARION_ADMIN_LISTEN", "127.0.0.1:9100");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert!(
                config
                    .metrics_token
                    .as_ref()
                    .unwrap()
                    .matches("operator-token-0123456789")
            );
            assert_eq!(config.admin_listen.unwrap().port(), 9100);
            assert!(!format!("{config:?}").contains("operator-token-0123456789"));
            // An all-digit token read as a number by the environment layer still works.
            jail.set_env("CLARION_METRICS_TOKEN", "12345678901234567");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert!(config.metrics_token.unwrap().matches("12345678901234567"));
            Ok(())
        });
    }

    #[test]
    fn the_secret_key_ring_comes_from_the_environment_and_is_never_printed() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, Overrides::default()).unwrap();
            assert!(
                config.store_options().secret_keys.is_none(),
                "key file on SQLite"
            );

            let current = SecretKey::generate();
            let previous = SecretKey::generate();
            jail.set_env("CLARION_SECRET_KEY", current.to_base64());
            jail.set_env(
                "CLARION_PREVIOUS_SECRET_KEYS",
                format!("{}, ", previous.to_base64()),
            );
            let config = Config::load(None, Overrides::default()).unwrap();
            let ring = config.store_options().secret_keys.unwrap();
            assert_eq!(
                ring,
                SecretKeys::new(current.clone()).with_previous([previous.clone()])
            );
            let shown = format!("{config:?}");
            assert!(!shown.contains(&current.to_base64()), "{shown}");
            assert!(!shown.contains(&previous.to_base64()), "{shown}");

            // A malformed key is refused with the key named and its value not echoed.
            jail.set_env("CLARION_SECRET_KEY", "c2hvcnQta2V5");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("secret_key"), "{error}");
            assert!(!error.contains("c2hvcnQta2V5"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn provider_capacity_defaults_to_vapis_ten_slots_and_one_text_a_second_and_is_checked() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.vapi.max_concurrent_calls, 10);
            assert_eq!(config.vapi.reserve_for_inbound, 0);
            assert!((config.twilio.messages_per_second - 1.0).abs() < f64::EPSILON);
            jail.set_env("CLARION_VAPI__MAX_CONCURRENT_CALLS", "4");
            jail.set_env("CLARION_VAPI__RESERVE_FOR_INBOUND", "4");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("vapi.max_concurrent_calls"), "{error}");
            jail.set_env("CLARION_VAPI__RESERVE_FOR_INBOUND", "1");
            jail.set_env("CLARION_TWILIO__MESSAGES_PER_SECOND", "0");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("twilio.messages_per_second"), "{error}");
            jail.set_env("CLARION_TWILIO__MESSAGES_PER_SECOND", "2.5");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.vapi.max_concurrent_calls, 4);
            assert!((config.twilio.messages_per_second - 2.5).abs() < f64::EPSILON);
            Ok(())
        });
    }

    #[test]
    fn twilio_texts_need_credentials_a_sender_and_the_public_address() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLARION_CHANNELS__SMS", "twilio");
            jail.set_env("CLARION_TWILIO__ACCOUNT_SID", "AC123");
            jail.set_env("CLARION_TWILIO__AUTH_TOKEN", "twilio-token-value");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("twilio.public_base_url"), "{error}");
            jail.set_env(
                "CLARION_TWILIO__PUBLIC_BASE_URL",
                "https://clarion.example.org",
            );
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(
                error.contains("messaging_service_sid or twilio.from_number"),
                "{error}"
            );
            jail.set_env("CLARION_TWILIO__MESSAGING_SERVICE_SID", "MG123");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert!(!format!("{config:?}").contains("twilio-token-value"));
            Ok(())
        });
    }

    #[test]
    fn string_settings_take_any_environment_value_as_text() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLARION_CHANNELS__SMS", "twilio");
            jail.set_env("CLARION_TWILIO__ACCOUNT_SID", "AC123");
            jail.set_env("CLARION_TWILIO__AUTH_TOKEN", "1234567890");
            jail.set_env(
                "CLARION_TWILIO__PUBLIC_BASE_URL",
                "https://clarion.example.org",
            );
            // The README's own example: a number with a `+`, which reads as an integer.
            jail.set_env("CLARION_TWILIO__FROM_NUMBER", "+15555550001");
            jail.set_env("CLARION_SIMULATOR__FROM_NUMBER", "15555550100");
            jail.set_env("CLARION_VAPI__PHONE_NUMBER_ID", "4242");
            jail.set_env("CLARION_LLM__MODEL", "3.5");
            jail.set_env("CLARION_VAPI__HMAC_SIGNATURE_HEADER", "true");
            // Numeric and boolean settings still read their text.
            jail.set_env("CLARION_VAPI__MAX_CONCURRENT_CALLS", "7");
            jail.set_env("CLARION_WEBHOOKS__ALLOW_HTTP", "true");
            jail.set_env("CLARION_TWILIO__MESSAGES_PER_SECOND", "3");
            jail.set_env("CLARION_WEBHOOKS__ALLOWED_PORTS", "[8443, 9443]");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.twilio.from_number.as_deref(), Some("+15555550001"));
            assert_eq!(config.twilio.auth_token.as_deref(), Some("1234567890"));
            assert_eq!(config.simulator.from_number, "15555550100");
            assert_eq!(config.vapi.phone_number_id.as_deref(), Some("4242"));
            assert_eq!(config.llm.model, "3.5");
            assert_eq!(config.vapi.hmac_signature_header, "true");
            assert_eq!(config.vapi.max_concurrent_calls, 7);
            assert!(config.webhooks.allow_http);
            assert!((config.twilio.messages_per_second - 3.0).abs() < f64::EPSILON);
            assert_eq!(config.webhooks.allowed_ports, [8443, 9443]);
            Ok(())
        });
    }

    #[test]
    fn clarion_variables_that_are_not_settings_are_ignored_but_a_sections_typo_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLARION_DIR", "/tmp");
            jail.set_env("CLARION_HOME", "/home/someone");
            jail.set_env("CLARION_WEBHOOK_SECRET", "whsec_not_configuration");
            jail.set_env("CLARION_URL", "http://127.0.0.1:1");
            jail.set_env("CLARION_WEBHOOK__ATTEMPT_TIMEOUT", "soon");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.webhooks.attempt_timeout.0, Duration::from_secs(15));
            let ignored = ignored_setting_like_variables();
            assert!(
                ignored.contains(&"CLARION_WEBHOOK__ATTEMPT_TIMEOUT".to_owned()),
                "{ignored:?}"
            );
            assert!(
                !ignored.iter().any(|name| name == "CLARION_DIR"),
                "{ignored:?}"
            );
            jail.set_env("CLARION_WEBHOOKS__RETRY_SCHEDUL", "[\"1s\"]");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.contains("retry_schedul"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            // A top-level key is a setting too, and its value is checked.
            jail.set_env("CLARION_LISTEN", "not an address");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.to_lowercase().contains("listen"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_environment_key_lists_are_the_documented_keys() {
        let defaults = Figment::from(Toml::string(DEFAULT_CONFIG)).data().unwrap();
        let defaults = &defaults[&Profile::Default];
        for (key, value) in defaults {
            match value {
                Value::Dict(..) => assert!(SECTIONS.contains(&key.as_str()), "{key}"),
                _ => assert!(TOP_LEVEL_KEYS.contains(&key.as_str()), "{key}"),
            }
        }
        for section in SECTIONS {
            assert!(
                matches!(defaults.get(*section), Some(Value::Dict(..))),
                "{section}"
            );
        }
        for key in TOP_LEVEL_KEYS {
            assert!(
                DEFAULT_CONFIG.contains(&format!("\n{key} = "))
                    || DEFAULT_CONFIG.contains(&format!("\n# {key} = ")),
                "{key} is documented in config.default.toml"
            );
        }
    }

    #[test]
    fn the_log_format_is_text_by_default_and_json_on_request() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.log_format, LogFormat::Text);
            jail.set_env("CLARION_LOG_FORMAT", "json");
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.log_format, LogFormat::Json);
            jail.set_env("CLARION_LOG_FORMAT", "xml");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(error.to_lowercase().contains("log_format"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_role_is_all_by_default_and_a_split_needs_postgresql() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(config.role, Role::All);
            assert!(config.role.serves_api() && config.role.runs_loops());
            // On SQLite one process runs everything: a split is refused, naming the key.
            jail.set_env("CLARION_ROLE", "worker");
            let error = format!(
                "{:#}",
                Config::load(None, Overrides::default()).unwrap_err()
            );
            assert!(
                error.contains("role = \"worker\" needs a PostgreSQL"),
                "{error}"
            );
            let on_postgres = |role| Overrides {
                role,
                database_url: Some("postgres://clarion@db.example:5432/clarion".into()),
                ..Overrides::default()
            };
            let worker = Config::load(None, on_postgres(None)).unwrap().role;
            assert_eq!(worker, Role::Worker);
            assert!(!worker.serves_api() && worker.runs_loops());
            // The flag wins over the environment.
            let api = Config::load(None, on_postgres(Some(Role::Api)))
                .unwrap()
                .role;
            assert_eq!(api, Role::Api);
            assert!(api.serves_api() && !api.runs_loops());
            jail.set_env("CLARION_ROLE", "scheduler");
            let error = format!("{:#}", Config::load(None, on_postgres(None)).unwrap_err());
            assert!(error.to_lowercase().contains("role"), "{error}");
            Ok(())
        });
    }
}
