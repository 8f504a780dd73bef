//! `/v1/caller-numbers`: the organisation's own numbers to call and text from.
//!
//! Each call, and each conversation's first text, goes out from one of the organisation's
//! enabled numbers of its channel, chosen just before the provider request (the contact's
//! area code first, then round robin, within each number's daily cap; the scheduler's
//! `caller_numbers` module). Without any, the deployment's configured number is used. A call
//! number needs its Vapi `provider_id` (phoneNumberId); a text number is the Twilio `From`.
//! The numbers are the clinic's, not PHI, but like every number they stay out of logs.
//!
//! Every organisation calls through the deployment's one Vapi account and texts through its
//! Twilio account, so which numbers (and Vapi phoneNumberIds) an organisation may use is the
//! operator's decision (`clarion org allow-caller-number`): a number is accepted here only
//! when it is on the organisation's allow-list, with the allowed provider id, and the same
//! 422 answers whether or not another organisation has it (no existence oracle).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_store::{
    AllowedCallerNumber, CallerNumber, CallerNumberId, CallerNumberPatch, Channel, IdKind,
    NewCallerNumber, OrgId, PublicIds, StoreError,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, IdPath, Org};
use crate::routes::assistants::ListQuery;
use crate::routes::organization::present;
use crate::wire::{self, Page};

/// Why a call number without a provider id is refused.
const CALL_NEEDS_PROVIDER_ID: &str = "a call number needs its Vapi phoneNumberId as provider_id";

/// The largest `daily_cap`.
const MAX_DAILY_CAP: i64 = 1_000_000;

/// A caller number.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallerNumberOut {
    pub id: i64,
    /// `call` or `sms`.
    pub channel: String,
    /// E.164: the caller id of a call, the `From` of a text.
    pub number: String,
    /// The provider's id for the number: the Vapi phoneNumberId of a call number.
    pub provider_id: Option<String>,
    /// At most this many contacts from the number per rolling 24 hours; `null`: no cap.
    pub daily_cap: Option<u32>,
    pub enabled: bool,
    /// When it was last chosen for a contact; `null` if never.
    pub last_chosen_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl CallerNumberOut {
    fn new(ids: &PublicIds, n: CallerNumber) -> Self {
        Self {
            id: ids.encode(IdKind::CallerNumber, n.id),
            channel: n.channel.as_str().to_owned(),
            number: n.number,
            provider_id: n.provider_id,
            daily_cap: n.daily_cap,
            enabled: n.enabled,
            last_chosen_at: n.last_chosen_at.map(wire::time),
            created_at: wire::time(n.created_at),
            updated_at: wire::time(n.updated_at),
        }
    }
}

/// Body of `POST /v1/caller-numbers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCallerNumber {
    /// `call` or `sms`.
    pub channel: String,
    /// E.164. The deployment's operator must have allowed it on this channel to this
    /// organisation (`clarion org allow-caller-number`); otherwise 422 on `number`.
    pub number: String,
    /// The Vapi phoneNumberId of a call number; absent, the one the operator allowed with
    /// the number is used, and one given must equal it. For `sms`, optional and
    /// informational (the number itself is the Twilio `From`), but when the operator allowed
    /// the number with an id, that one.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// 1 to 1,000,000 contacts per rolling 24 hours; absent or `null`: no cap.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub daily_cap: Option<i64>,
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Body of `PATCH /v1/caller-numbers/{id}`: absent keys stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCallerNumber {
    /// `null` clears it (not allowed for a call number). It must be the one the operator
    /// allowed with the number, when the operator set one.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub provider_id: Option<Option<String>>,
    /// `null`: no cap.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub daily_cap: Option<Option<i64>>,
    pub enabled: Option<bool>,
}

fn valid_provider_id(provider_id: &str) -> Result<(), ApiError> {
    if provider_id.trim().is_empty() || provider_id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "provider_id",
            "provider_id must be a non-empty id without control characters",
        ));
    }
    crate::limits::check_text(
        "provider_id",
        provider_id,
        crate::limits::MAX_SHORT_TEXT_CHARS,
    )
}

/// Why a number off the organisation's allow-list is refused (the same whether or not another
/// organisation has it).
const NUMBER_NOT_ALLOWED: &str = "the deployment's operator has not allowed this number on this \
     channel for this organisation (clarion org allow-caller-number)";

/// Why a provider id other than the allowed one is refused.
const PROVIDER_ID_NOT_ALLOWED: &str = "the deployment's operator has not allowed this \
     provider_id for this number in this organisation; omit it to use the allowed one";

/// The provider id a caller number must carry, given the one asked for (`None`: none asked)
/// and the organisation's allowance of the number: the allowed id when the allow-list sets
/// one (taken from it when none is asked), else what was asked (a text number's is only
/// recorded; a call number always has one on the allow-list).
fn allowed_provider_id(
    channel: Channel,
    asked: Option<String>,
    allowed: &AllowedCallerNumber,
) -> Result<Option<String>, ApiError> {
    match (asked, allowed.provider_id.as_deref()) {
        (Some(asked), Some(allowed)) if asked != allowed => {
            Err(ApiError::invalid("provider_id", PROVIDER_ID_NOT_ALLOWED))
        }
        (_, Some(allowed)) => Ok(Some(allowed.to_owned())),
        (Some(_), None) if channel == Channel::Call => {
            Err(ApiError::invalid("provider_id", PROVIDER_ID_NOT_ALLOWED))
        }
        (asked, None) => Ok(asked),
    }
}

fn valid_cap(cap: Option<i64>) -> Result<Option<u32>, ApiError> {
    cap.map(|cap| {
        if (1..=MAX_DAILY_CAP).contains(&cap) {
            u32::try_from(cap).map_err(|_| ApiError::invalid("daily_cap", "daily_cap is too large"))
        } else {
            Err(ApiError::invalid(
                "daily_cap",
                format!("daily_cap must be between 1 and {MAX_DAILY_CAP}, or null for no cap"),
            ))
        }
    })
    .transpose()
}

fn caller_number_of(state: &AppState, org: OrgId, id: i64) -> Result<CallerNumberId, ApiError> {
    wire::internal(
        &state.store.public_ids(org),
        IdKind::CallerNumber,
        id,
        "caller number",
    )
}

#[utoipa::path(post, path = "/v1/caller-numbers", tag = "caller numbers",
    request_body = CreateCallerNumber,
    responses((status = 201, body = CallerNumberOut), (status = 409, body = ErrorBody,
        description = "the organisation has this number for this channel already"),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a field is malformed, \
            or the deployment's operator has not allowed this number on this channel for \
            this organisation (field `number`), or not with this `provider_id` (field \
            `provider_id`; absent, the allowed one is used). The same answer whether or not \
            another organisation has the number.")),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(body): ApiJson<CreateCallerNumber>,
) -> Result<(StatusCode, Json<CallerNumberOut>), ApiError> {
    let channel: Channel = body
        .channel
        .parse()
        .map_err(|_| ApiError::invalid("channel", "channel must be call or sms"))?;
    clarion_scheduler::definition::validate_e164("number", &body.number)
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    if let Some(id) = &body.provider_id {
        valid_provider_id(id)?;
    }
    let daily_cap = valid_cap(body.daily_cap)?;
    let allowed = state
        .store
        .allowed_caller_number(org, channel, &body.number)
        .await?
        .ok_or_else(|| ApiError::invalid("number", NUMBER_NOT_ALLOWED))?;
    let provider_id = allowed_provider_id(channel, body.provider_id, &allowed)?;
    if channel == Channel::Call && provider_id.is_none() {
        return Err(ApiError::invalid("provider_id", CALL_NEEDS_PROVIDER_ID));
    }
    let new = NewCallerNumber {
        channel,
        number: &body.number,
        provider_id: provider_id.as_deref(),
        daily_cap,
        enabled: body.enabled.unwrap_or(true),
    };
    let now = state.clock.now_millis();
    let created = match state.store.create_caller_number(org, &new, now).await {
        Ok(created) => created,
        Err(StoreError::Conflict) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "caller_number_exists",
                "the organisation has this number for this channel already",
            )
            .with_field("number"));
        }
        Err(other) => return Err(other.into()),
    };
    Ok((
        StatusCode::CREATED,
        Json(CallerNumberOut::new(&state.store.public_ids(org), created)),
    ))
}

#[utoipa::path(get, path = "/v1/caller-numbers", tag = "caller numbers",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<CallerNumberOut>))), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<CallerNumberOut>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let after = wire::cursor(&ids, IdKind::CallerNumber, query.after.as_deref())?;
    let numbers = state.store.list_caller_numbers(org, after, limit).await?;
    let rows = numbers
        .into_iter()
        .map(|n| {
            let cursor = wire::next_cursor(&ids, IdKind::CallerNumber, n.id);
            (CallerNumberOut::new(&ids, n), cursor)
        })
        .collect();
    Ok(Json(wire::bounded_page(rows, limit)))
}

#[utoipa::path(get, path = "/v1/caller-numbers/{id}", tag = "caller numbers",
    responses((status = 200, body = CallerNumberOut), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<CallerNumberOut>, ApiError> {
    let id = caller_number_of(&state, org, id)?;
    let number = state
        .store
        .get_caller_number(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("caller number"))?;
    Ok(Json(CallerNumberOut::new(
        &state.store.public_ids(org),
        number,
    )))
}

#[utoipa::path(patch, path = "/v1/caller-numbers/{id}", tag = "caller numbers",
    request_body = UpdateCallerNumber,
    responses((status = 200, body = CallerNumberOut), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a field is \
            malformed, or `provider_id` is not the one the deployment's operator allowed for \
            this number in this organisation (or the number is no longer allowed).")),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<UpdateCallerNumber>,
) -> Result<Json<CallerNumberOut>, ApiError> {
    let id = caller_number_of(&state, org, id)?;
    // Existence first, so another organisation's id is 404 before any validation detail.
    let current = state
        .store
        .get_caller_number(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("caller number"))?;
    match &body.provider_id {
        Some(Some(provider_id)) => valid_provider_id(provider_id)?,
        Some(None) if current.channel == Channel::Call => {
            return Err(ApiError::invalid("provider_id", CALL_NEEDS_PROVIDER_ID));
        }
        _ => {}
    }
    let daily_cap = body.daily_cap.map(valid_cap).transpose()?;
    if let Some(asked) = &body.provider_id {
        // A new provider id must be the allowed one (a number taken off the allow-list can
        // change its cap or be disabled, not take another id).
        let allowed = state
            .store
            .allowed_caller_number(org, current.channel, &current.number)
            .await?
            .ok_or_else(|| ApiError::invalid("provider_id", PROVIDER_ID_NOT_ALLOWED))?;
        if allowed_provider_id(current.channel, asked.clone(), &allowed)? != *asked {
            return Err(ApiError::invalid("provider_id", PROVIDER_ID_NOT_ALLOWED));
        }
    }
    let patch = CallerNumberPatch {
        provider_id: body.provider_id,
        daily_cap,
        enabled: body.enabled,
    };
    let now = state.clock.now_millis();
    let number = state
        .store
        .update_caller_number(org, id, &patch, now)
        .await?
        .ok_or_else(|| ApiError::not_found("caller number"))?;
    Ok(Json(CallerNumberOut::new(
        &state.store.public_ids(org),
        number,
    )))
}

/// Removes a caller number: it is not chosen again; encounters keep the number they went out
/// from, and replies to a conversation begun from it still reach that conversation.
#[utoipa::path(delete, path = "/v1/caller-numbers/{id}", tag = "caller numbers",
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let id = caller_number_of(&state, org, id)?;
    if state.store.delete_caller_number(org, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("caller number"))
    }
}
