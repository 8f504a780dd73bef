//! `/v1/assistants`: the AI agents that handle calls and SMS conversations.
//!
//! An assistant's `config` is bounded in size, depth and entries
//! ([`crate::limits::ASSISTANT_CONFIG`]), and an SMS
//! assistant's `config.script` must pass the script's checks and size limits
//! ([`clarion_providers::ScriptConfig::validate`]) when it is created: a script that could
//! render unbounded texts is refused with a 422 here, not discovered while texting.
//!
//! A `config.vapi_assistant_id` must be on the organisation's Vapi allow-list, which only
//! the operator sets (`clarion org allow-vapi-assistant`): every organisation's calls go
//! through the deployment's one Vapi account, so without it a tenant could drive any Vapi
//! assistant there and receive its end-of-call reports. The scheduler checks the list again
//! before each call, so taking an id off it stops calls already planned.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_store::{Assistant, Channel, IdKind, PublicIds};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, IdPath, Org};
use crate::limits;
use crate::wire::{self, Page};

/// An assistant.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantOut {
    pub id: i64,
    pub name: String,
    /// `call` or `sms`.
    pub channel: String,
    /// Provider configuration (for the simulator: `purpose`, `organisation_name`).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Custom analysis fields the assistant extracts: `[{"name", "type": "boolean"|"string"|"number"|"enum", "values"?, "description"?}]`.
    #[schema(value_type = Vec<Object>)]
    pub custom_fields: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

impl AssistantOut {
    fn new(ids: &PublicIds, a: Assistant) -> Self {
        Self {
            id: ids.encode(IdKind::Assistant, a.id),
            name: a.name,
            channel: a.channel.as_str().to_owned(),
            config: a.config,
            custom_fields: a.custom_fields,
            created_at: wire::time(a.created_at),
            updated_at: wire::time(a.updated_at),
        }
    }
}

/// Body of `POST /v1/assistants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssistant {
    pub name: String,
    /// `call` or `sms`.
    pub channel: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
}

/// A custom analysis field.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomField {
    pub name: String,
    /// `boolean`, `string`, `number` or `enum`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The allowed values of an `enum` field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// Checks the size, depth and entries of `config` ([`limits::ASSISTANT_CONFIG`]) and, when
/// it has one, its SMS script.
fn validate_config(channel: Channel, config: &serde_json::Value) -> Result<(), ApiError> {
    limits::check_json("config", config, limits::ASSISTANT_CONFIG)?;
    if channel == Channel::Sms && config.get("script").is_some() {
        use clarion_providers::sms_assistant::ScriptError;
        clarion_providers::ScriptConfig::from_assistant_config(config).map_err(
            |error| match error {
                ScriptError::Invalid { field, problem } => {
                    ApiError::invalid(&format!("config.script.{field}"), problem)
                }
                other => ApiError::invalid("config.script", other.to_string()),
            },
        )?;
    }
    Ok(())
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(post, path = "/v1/assistants", tag = "assistants", request_body = CreateAssistant,
    responses((status = 201, body = AssistantOut), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(body): ApiJson<CreateAssistant>,
) -> Result<(StatusCode, Json<AssistantOut>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name",
            "name must be 1 to 200 characters",
        ));
    }
    let channel: Channel = body
        .channel
        .parse()
        .map_err(|_| ApiError::invalid("channel", "channel must be call or sms"))?;
    if !body.config.is_object() {
        return Err(ApiError::invalid("config", "config must be an object"));
    }
    validate_config(channel, &body.config)?;
    if let Some(vapi_assistant) = body.config.get("vapi_assistant_id") {
        let allowed = match vapi_assistant.as_str() {
            Some(id) => state.store.vapi_assistant_allowed(org, id).await?,
            None => false,
        };
        if !allowed {
            return Err(ApiError::invalid(
                "config.vapi_assistant_id",
                "this Vapi assistant is not enabled for the organisation; the deployment's \
                 operator enables it (clarion org allow-vapi-assistant)",
            ));
        }
    }
    if body.custom_fields.len() > limits::MAX_CUSTOM_FIELDS {
        return Err(ApiError::invalid(
            "custom_fields",
            format!("at most {} custom fields", limits::MAX_CUSTOM_FIELDS),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, field) in body.custom_fields.iter().enumerate() {
        let at = |f: &str| format!("custom_fields[{i}].{f}");
        limits::check_text(
            &at("description"),
            &field.description,
            limits::MAX_DESCRIPTION_CHARS,
        )?;
        if field.values.len() > limits::MAX_ENUM_VALUES {
            return Err(ApiError::invalid(
                &at("values"),
                format!("at most {} values", limits::MAX_ENUM_VALUES),
            ));
        }
        for (j, value) in field.values.iter().enumerate() {
            limits::check_text(
                &format!("custom_fields[{i}].values[{j}]"),
                value,
                limits::MAX_ENUM_VALUE_CHARS,
            )?;
        }
        let valid_name = !field.name.is_empty()
            && field.name.len() <= 64
            && field
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(ApiError::invalid(
                &at("name"),
                "letters, digits and underscores, at most 64",
            ));
        }
        if !seen.insert(field.name.clone()) {
            return Err(ApiError::invalid(
                &at("name"),
                "custom field names must be unique",
            ));
        }
        match field.kind.as_str() {
            "boolean" | "string" | "number" => {}
            "enum" if !field.values.is_empty() => {}
            "enum" => {
                return Err(ApiError::invalid(
                    &at("values"),
                    "an enum field needs values",
                ));
            }
            _ => {
                return Err(ApiError::invalid(
                    &at("type"),
                    "type must be boolean, string, number or enum",
                ));
            }
        }
    }
    let custom_fields =
        serde_json::to_value(&body.custom_fields).map_err(|e| ApiError::internal(&e))?;
    limits::check_json("custom_fields", &custom_fields, limits::CUSTOM_FIELDS)?;
    let now = state.clock.now_millis();
    let assistant = state
        .store
        .create_assistant(org, name, channel, &body.config, &custom_fields, now)
        .await?;
    let ids = state.store.public_ids(org);
    Ok((
        StatusCode::CREATED,
        Json(AssistantOut::new(&ids, assistant)),
    ))
}

#[utoipa::path(get, path = "/v1/assistants", tag = "assistants",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<AssistantOut>))), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<AssistantOut>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let after = wire::cursor(&ids, IdKind::Assistant, query.after.as_deref())?;
    let store = &state.store;
    let page = wire::bounded_page_in_chunks(
        limit,
        after,
        |after, n| async move { Ok(store.list_assistants(org, after, n).await?) },
        |a| {
            let cursor = wire::next_cursor(&ids, IdKind::Assistant, a.id);
            let id = a.id;
            Ok((AssistantOut::new(&ids, a), cursor, id))
        },
    )
    .await?;
    Ok(Json(page))
}

#[utoipa::path(get, path = "/v1/assistants/{id}", tag = "assistants",
    responses((status = 200, body = AssistantOut), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<AssistantOut>, ApiError> {
    let ids = state.store.public_ids(org);
    let id = wire::internal(&ids, IdKind::Assistant, id, "assistant")?;
    let assistant = state
        .store
        .get_assistant(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("assistant"))?;
    Ok(Json(AssistantOut::new(&ids, assistant)))
}
