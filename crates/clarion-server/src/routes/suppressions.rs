//! `/v1/suppressions`: the organisation's do-not-contact list. Opt-outs land here; enrolling a
//! listed number is refused, and a running sequence whose number gets listed ends without
//! further contact.
//!
//! An entry the patient caused (`reason: "opt-out"`) is removed only with a recorded new
//! consent (who obtained it, when, how); every addition and removal is kept in the number's
//! history (`GET /v1/suppressions/{phone_number}/history`), written in the change's own
//! transaction.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clarion_store::{ConsentRecord, IdKind, Unsuppressed};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, Org, OrgCaller, parse_json};
use crate::wire::{self, Page};

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionOut {
    pub phone_number: String,
    /// `opt-out` when the contact opted out; what the caller said otherwise.
    pub reason: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressionIn {
    pub phone_number: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<SuppressionOut>))), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<SuppressionOut>>, ApiError> {
    let limit = wire::limit(query.limit)?;
    let entries = state
        .store
        .list_suppressions(org, query.after.as_deref(), limit)
        .await?;
    let rows = entries
        .into_iter()
        .map(|e| {
            let cursor = e.phone_number.clone();
            let entry = SuppressionOut {
                phone_number: e.phone_number,
                reason: e.reason,
                created_at: wire::time(e.created_at),
            };
            (entry, cursor)
        })
        .collect();
    Ok(Json(wire::bounded_page(rows, limit)))
}

#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = SuppressionIn,
    responses((status = 201, body = SuppressionOut), (status = 422, body = ErrorBody)), security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(body): ApiJson<SuppressionIn>,
) -> Result<(StatusCode, Json<SuppressionOut>), ApiError> {
    let (phone_number, reason, now) = add(
        &state,
        caller.org,
        &caller.actor(),
        &body.phone_number,
        body.reason,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(SuppressionOut {
            phone_number,
            reason,
            created_at: wire::time(now),
        }),
    ))
}

/// Puts a number on the organisation's list (the API's and the dashboard's action), recorded
/// with `actor`; answers the number, the reason and the time.
pub(crate) async fn add(
    state: &AppState,
    org: clarion_store::OrgId,
    actor: &str,
    phone_number: &str,
    reason: Option<String>,
) -> Result<(String, String, i64), ApiError> {
    let number = phone_number.trim();
    clarion_scheduler::definition::validate_e164("phone_number", number)
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    if let Some(reason) = &reason {
        crate::limits::check_text("reason", reason, crate::limits::MAX_SHORT_TEXT_CHARS)?;
    }
    let reason = reason.unwrap_or_else(|| "added through the API".to_owned());
    let now = state.clock.now_millis();
    let mut tx = state.store.begin().await?;
    state
        .store
        .suppress_by(&mut tx, org, number, &reason, actor, now)
        .await?;
    tx.commit().await?;
    Ok((number.to_owned(), reason, now))
}

/// How a new consent was obtained.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentMethod {
    /// A signed form.
    Written,
    /// Said to a member of staff (in person or on the phone).
    Verbal,
    /// The patient texted START (or another opt-in keyword).
    SmsStart,
    /// An electronic form or portal setting.
    Electronic,
}

/// The new consent that allows a patient's opt-out to be removed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentIn {
    /// Who obtained the consent (a member of staff, a role, a system), 1–200 characters.
    pub obtained_by: String,
    /// When it was obtained, RFC 3339; not before the opt-out and not in the future.
    pub obtained_at: String,
    pub method: ConsentMethod,
    /// Anything else worth keeping with it, up to 1,000 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// The body of `DELETE /v1/suppressions/{phone_number}`: optional for an entry an operator
/// added, required (with `consent`) for a patient's opt-out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsuppressIn {
    #[serde(default)]
    pub consent: Option<ConsentIn>,
}

/// A consent as recorded in the history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentOut {
    pub obtained_by: String,
    pub obtained_at: String,
    pub method: ConsentMethod,
    pub note: Option<String>,
}

/// One change to a number's entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionChangeOut {
    pub id: i64,
    pub phone_number: String,
    /// `added` or `removed`.
    pub action: String,
    /// The entry's reason at the time (`opt-out` for a patient's opt-out).
    pub reason: String,
    /// Who made the change: `patient`, `system`, `api-key:<id>`, or `unknown` for entries
    /// added before the history was kept.
    pub actor: String,
    pub at: String,
    /// The new consent recorded with a removal, or null.
    pub consent: Option<ConsentOut>,
}

/// How far ahead of the server's clock a consent's time may be (clock skew between the
/// operator's systems and this one).
const CONSENT_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Checks a consent and turns it into what the history keeps. Messages name fields, never
/// their values.
fn consent_record(consent: ConsentIn, now: i64) -> Result<(i64, serde_json::Value), ApiError> {
    let obtained_by = consent.obtained_by.trim();
    if obtained_by.is_empty() || obtained_by.chars().count() > 200 {
        return Err(ApiError::invalid(
            "consent.obtained_by",
            "who obtained the consent is required (1 to 200 characters)",
        ));
    }
    let obtained_at: clarion_webhooks::Timestamp =
        consent.obtained_at.trim().parse().map_err(|_| {
            ApiError::invalid(
                "consent.obtained_at",
                "expected an RFC 3339 time, e.g. 2025-01-08T14:30:00Z",
            )
        })?;
    let obtained_at_ms = obtained_at.unix_millis();
    if obtained_at_ms > now + CONSENT_CLOCK_SKEW_MS {
        return Err(ApiError::invalid(
            "consent.obtained_at",
            "the consent cannot have been obtained in the future",
        ));
    }
    let note = consent
        .note
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 1_000) {
        return Err(ApiError::invalid(
            "consent.note",
            "the note is limited to 1,000 characters",
        ));
    }
    let recorded = ConsentOut {
        obtained_by: obtained_by.to_owned(),
        obtained_at: obtained_at.to_string(),
        method: consent.method,
        note,
    };
    let detail = serde_json::to_value(&recorded).map_err(|e| ApiError::internal(&e))?;
    Ok((obtained_at_ms, detail))
}

/// Removes a number from the list. An operator's entry goes with or without a body; a
/// patient's opt-out (`reason: "opt-out"`) only with `{"consent": {...}}`, else 409
/// `consent_required` and nothing changes. The removal (with its consent) stays in the history.
#[utoipa::path(delete, path = "/v1/suppressions/{phone_number}", tag = "suppressions",
    request_body(content = Option<UnsuppressIn>, description = "required, with `consent`, to remove a patient's opt-out"),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, description = "the entry is a patient's opt-out and no (new enough) consent was given", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path(phone_number): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    // The body is optional: an empty one means "no consent".
    let request: UnsuppressIn = if body.iter().all(u8::is_ascii_whitespace) {
        UnsuppressIn { consent: None }
    } else {
        parse_json(&body)?
    };
    remove(
        &state,
        caller.org,
        &caller.actor(),
        &phone_number,
        request.consent,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a number off the organisation's list (the API's and the dashboard's action): a
/// patient's opt-out only with a new consent.
pub(crate) async fn remove(
    state: &AppState,
    org: clarion_store::OrgId,
    actor: &str,
    phone_number: &str,
    consent: Option<ConsentIn>,
) -> Result<(), ApiError> {
    let now = state.clock.now_millis();
    let consent = consent
        .map(|consent| consent_record(consent, now))
        .transpose()?;
    let consent = consent.as_ref().map(|(obtained_at, detail)| ConsentRecord {
        obtained_at: *obtained_at,
        detail,
    });
    match state
        .store
        .unsuppress(org, phone_number.trim(), actor, consent, now)
        .await?
    {
        Unsuppressed::Removed => Ok(()),
        Unsuppressed::NotListed => Err(ApiError::not_found("suppression")),
        Unsuppressed::ConsentRequired => Err(ApiError::new(
            StatusCode::CONFLICT,
            "consent_required",
            "the patient opted out; removing the entry needs a new consent: send \
             {\"consent\": {\"obtained_by\", \"obtained_at\", \"method\"}}",
        )
        .with_field("consent")),
        Unsuppressed::ConsentPredatesOptOut => Err(ApiError::new(
            StatusCode::CONFLICT,
            "consent_predates_opt_out",
            "the consent was obtained before the patient opted out; a new consent is needed",
        )
        .with_field("consent.obtained_at")),
    }
}

/// The author of a change as the organisation sees it: an API key by its public id (the
/// stored key id is a global counter, like every row id).
pub(crate) fn public_actor(ids: &clarion_store::PublicIds, actor: String) -> String {
    match actor
        .strip_prefix("api-key:")
        .and_then(|id| id.parse::<i64>().ok())
    {
        Some(key) => format!("api-key:{}", ids.encode(IdKind::ApiKey, key)),
        None => actor,
    }
}

/// Every addition and removal of one number on the organisation's list, oldest first,
/// including the consent recorded with each removal of an opt-out. 404 when the organisation
/// never listed the number.
#[utoipa::path(get, path = "/v1/suppressions/{phone_number}/history", tag = "suppressions",
    responses((status = 200, body = inline(Page<SuppressionChangeOut>)), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Org(org): Org,
    Path(phone_number): Path<String>,
) -> Result<Json<Page<SuppressionChangeOut>>, ApiError> {
    let changes = state
        .store
        .suppression_history(org, phone_number.trim())
        .await?;
    if changes.is_empty() {
        return Err(ApiError::not_found("suppression"));
    }
    let ids = state.store.public_ids(org);
    let data = changes
        .into_iter()
        .map(|change| SuppressionChangeOut {
            id: ids.encode(IdKind::SuppressionChange, change.id),
            phone_number: change.phone_number,
            action: change.action.as_str().to_owned(),
            reason: change.reason,
            actor: public_actor(&ids, change.actor),
            at: wire::time(change.at),
            consent: change
                .consent
                .and_then(|value| serde_json::from_value(value).ok()),
        })
        .collect();
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}
