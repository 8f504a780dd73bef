//! `/v1/sequences`: enrollment, reading, listing, cancel/pause/resume and history.
//!
//! Enrollment (single, batch, and so `clarion enroll`'s CSV rows) checks the `variables`
//! against their size limits ([`clarion_scheduler::definition::validate_variables`]) and
//! refuses variables that would make any text of an SMS step's script longer than one SMS
//! ([`clarion_providers::ScriptConfig::check_rendering`]); both answer 422 naming the field,
//! never the value.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clarion_providers::sms_assistant::ScriptError;
use clarion_providers::{Conversation, ScriptConfig};
use clarion_scheduler::definition::{ContactInfo, TemplateDefinition};
use clarion_scheduler::{Control, EnrollRequest, Enrolled, SchedulerError};
use clarion_store::{AssistantId, Channel, IdKind, OrgId, SequenceId, SequenceStatus, TemplateId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, IdPath, Org};
use crate::limits;
use crate::wire::{self, Page};

/// Most items in one batch enrollment.
pub const MAX_BATCH: usize = 1000;
/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 200;

/// The contact to reach.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    /// E.164, e.g. `+15555550123`.
    pub phone_number: String,
    /// IANA zone, e.g. `America/New_York`; calling hours are read in it.
    pub time_zone: String,
    pub name: Option<String>,
    pub external_id: Option<String>,
    /// The contact's US state, two letters (e.g. `FL`): its calling rules apply (stricter
    /// windows, attempt limits). Absent: the state of the number's area code, if any.
    pub state: Option<String>,
}

/// Body of `POST /v1/sequences`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollIn {
    pub template_id: i64,
    pub contact: ContactIn,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Simulator only: `{"outcomes": ["voicemail", "resolved"]}`, one per encounter in order.
    #[schema(value_type = Option<Object>)]
    pub simulation: Option<Value>,
    /// Allow this number in more than one running sequence of the template.
    #[serde(default)]
    pub allow_concurrent: bool,
}

/// One item of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub contact: ContactIn,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    #[schema(value_type = Option<Object>)]
    pub simulation: Option<Value>,
    #[serde(default)]
    pub allow_concurrent: bool,
}

/// Body of `POST /v1/sequences/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    pub template_id: i64,
    pub items: Vec<BatchItem>,
}

/// One item's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    pub index: usize,
    /// 201 created, or the status the item alone would have got.
    pub status: u16,
    #[schema(value_type = Option<Object>)]
    pub sequence: Option<Box<RawValue>>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

fn validate_simulation(field: &str, simulation: &Option<Value>) -> Result<(), ApiError> {
    let Some(simulation) = simulation else {
        return Ok(());
    };
    let object = simulation
        .as_object()
        .ok_or_else(|| ApiError::invalid(field, "must be an object"))?;
    for key in object.keys() {
        if key != "outcomes" {
            return Err(ApiError::invalid(
                &format!("{field}.{key}"),
                "unknown field",
            ));
        }
    }
    if let Some(outcomes) = object.get("outcomes") {
        let list = outcomes.as_array().ok_or_else(|| {
            ApiError::invalid(&format!("{field}.outcomes"), "must be an array of outcomes")
        })?;
        for (i, outcome) in list.iter().enumerate() {
            let valid = outcome
                .as_str()
                .is_some_and(|s| s.parse::<clarion_channels::EncounterOutcome>().is_ok());
            if !valid {
                return Err(ApiError::invalid(
                    &format!("{field}.outcomes[{i}]"),
                    "not a simulator outcome (resolved, unresolved, voicemail, no-answer, busy, failed, declined, escalated, requested-callback, customer-dropped, assistant-ended, opt-out, no-reply, error)",
                ));
            }
        }
    }
    Ok(())
}

fn request(
    template_id: TemplateId,
    contact: ContactIn,
    variables: Map<String, Value>,
    simulation: Option<Value>,
    allow_concurrent: bool,
    idempotency_key: Option<String>,
    prefix: &str,
) -> Result<EnrollRequest, ApiError> {
    if let Some(simulation) = &simulation {
        limits::check_json(
            &format!("{prefix}simulation"),
            simulation,
            limits::SIMULATION,
        )?;
    }
    validate_simulation(&format!("{prefix}simulation"), &simulation)?;
    clarion_scheduler::definition::validate_variables(&format!("{prefix}variables"), &variables)
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    // Within the sizes just checked (16 KiB at most), so the copy is small.
    limits::check_json(
        &format!("{prefix}variables"),
        &Value::Object(variables.clone()),
        limits::VARIABLES,
    )?;
    if let Some(external_id) = &contact.external_id {
        limits::check_text(
            &format!("{prefix}contact.external_id"),
            external_id,
            limits::MAX_SHORT_TEXT_CHARS,
        )?;
    }
    let name = contact
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::invalid(
            &format!("{prefix}contact.name"),
            "at most 200 characters",
        ));
    }
    let contact_state = contact.state.map(|s| s.trim().to_ascii_uppercase());
    if let Some(code) = &contact_state
        && !clarion_scheduler::calling_rules::is_state_code(code)
    {
        return Err(ApiError::invalid(
            &format!("{prefix}contact.state"),
            "must be a two-letter US state code such as \"FL\"",
        ));
    }
    Ok(EnrollRequest {
        template_id,
        contact: ContactInfo {
            phone_number: contact.phone_number.trim().to_owned(),
            time_zone: contact.time_zone.trim().to_owned(),
            name,
            external_id: contact.external_id,
            state: contact_state,
        },
        variables,
        simulation,
        idempotency_key,
        allow_concurrent,
    })
}

/// The scripts of the template's SMS steps, by step index. An unknown template gives none
/// (the scheduler answers for it), and so does a step whose assistant has no valid script
/// (nothing would be texted).
async fn sms_scripts(
    state: &AppState,
    org: OrgId,
    template_id: TemplateId,
) -> Result<Vec<(usize, ScriptConfig)>, ApiError> {
    let Some(version) = state.store.get_template(org, template_id).await? else {
        return Ok(Vec::new());
    };
    let Ok(definition) = serde_json::from_value::<TemplateDefinition>(version.definition) else {
        return Ok(Vec::new());
    };
    let mut scripts = Vec::new();
    for (index, step) in definition.steps.iter().enumerate() {
        if step.channel != Channel::Sms {
            continue;
        }
        if let Some(assistant) = state
            .store
            .get_assistant(org, AssistantId(step.assistant_id))
            .await?
            && let Ok(script) = ScriptConfig::from_assistant_config(&assistant.config)
        {
            scripts.push((index, script));
        }
    }
    Ok(scripts)
}

/// Refuses an enrollment whose variables would render a text of one of `scripts` longer than
/// one SMS.
fn check_rendering(
    scripts: &[(usize, ScriptConfig)],
    request: &EnrollRequest,
    prefix: &str,
) -> Result<(), ApiError> {
    if scripts.is_empty() {
        return Ok(());
    }
    let conversation = Conversation::new(request.contact.name.clone(), request.variables.clone());
    for (step, script) in scripts {
        if let Err(ScriptError::Invalid { field, .. }) = script.check_rendering(&conversation) {
            return Err(ApiError::invalid(
                &format!("{prefix}variables"),
                format!(
                    "with these variables, steps[{step}]'s script.{field} would be longer than \
                     one SMS (1600 characters)"
                ),
            ));
        }
    }
    Ok(())
}

/// Maps a scheduler error to the API's error (fields prefixed for batch items).
pub(crate) fn scheduler_error(error: SchedulerError, prefix: &str) -> ApiError {
    match error {
        SchedulerError::Invalid(invalid) => ApiError::invalid(&format!("{prefix}{}", invalid.field), invalid.message),
        SchedulerError::TemplateNotFound => ApiError::invalid("template_id", "no such sequence template"),
        SchedulerError::SequenceNotFound => ApiError::not_found("sequence"),
        SchedulerError::Suppressed => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "suppressed",
            "the number is on the organisation's suppression list; it will not be contacted",
        )
        .with_field(format!("{prefix}contact.phone_number")),
        SchedulerError::AlreadyRunning => ApiError::new(
            StatusCode::CONFLICT,
            "already_enrolled",
            "the number is already in a running sequence of this template (set allow_concurrent to enroll it again)",
        )
        .with_field(format!("{prefix}contact.phone_number")),
        SchedulerError::Ended => ApiError::new(StatusCode::CONFLICT, "sequence_ended", "the sequence has ended"),
        SchedulerError::IdempotencyKeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request; use a new key for a new enrollment",
        )
        .with_field("Idempotency-Key"),
        SchedulerError::Store(error) => ApiError::from(error),
        SchedulerError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down; try again",
        ),
        other @ (SchedulerError::Corrupt(_) | SchedulerError::ProviderUnavailable) => {
            ApiError::internal(&other)
        }
    }
}

async fn sequence_json(
    state: &AppState,
    org: OrgId,
    id: SequenceId,
) -> Result<Box<RawValue>, ApiError> {
    let text = state
        .scheduler
        .report_json(org, id)
        .await
        .map_err(|e| scheduler_error(e, ""))?
        .ok_or_else(|| ApiError::not_found("sequence"))?;
    RawValue::from_string(text).map_err(|e| ApiError::internal(&e))
}

fn raw_response(status: StatusCode, body: &RawValue) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.get().to_owned(),
    )
        .into_response()
}

#[utoipa::path(post, path = "/v1/sequences", tag = "sequences", request_body = EnrollIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same body: a repeated request creates nothing and answers 200 with the first sequence. The key is bound to the request that first used it (a SHA-256 of its canonical form: the parsed body with keys sorted, so key order and whitespace do not matter); the same key with a different body answers 422 `idempotency_key_reused` and enrolls no one.")),
    responses((status = 201, description = "The sequence, in the End of Sequence Report's shape"),
               (status = 200, description = "An earlier request with the same Idempotency-Key and the same body created this sequence"),
               (status = 409, body = ErrorBody),
               (status = 422, body = ErrorBody, description = "Invalid field, suppressed number, or `idempotency_key_reused`: the Idempotency-Key was used with a different body")),
    security(("api_key" = [])))]
pub async fn enroll(
    State(state): State<AppState>,
    Org(org): Org,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EnrollIn>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN);
            Some(
                key.ok_or_else(|| {
                    ApiError::invalid("Idempotency-Key", "1 to 200 visible characters")
                })?
                .to_owned(),
            )
        }
    };
    let template_id = template_of(&state, org, body.template_id);
    let request = request(
        template_id,
        body.contact,
        body.variables,
        body.simulation,
        body.allow_concurrent,
        key,
        "",
    )?;
    check_rendering(
        &sms_scripts(&state, org, request.template_id).await?,
        &request,
        "",
    )?;
    let enrolled = state
        .scheduler
        .enroll(org, request)
        .await
        .map_err(|e| scheduler_error(e, ""))?;
    let (status, id) = match enrolled {
        Enrolled::Created(row) => (StatusCode::CREATED, row.id),
        Enrolled::Existing(row) => (StatusCode::OK, row.id),
    };
    Ok(raw_response(status, &sequence_json(&state, org, id).await?))
}

#[utoipa::path(post, path = "/v1/sequences/batch", tag = "sequences", request_body = BatchIn,
    responses((status = 200, body = inline(Page<BatchResult>)), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn enroll_batch(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(body): ApiJson<BatchIn>,
) -> Result<Json<Value>, ApiError> {
    if body.items.is_empty() || body.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "items",
            format!("1 to {MAX_BATCH} items"),
        ));
    }
    let template_id = template_of(&state, org, body.template_id);
    let items = body.items.into_iter().map(|item| (item, None)).collect();
    let outcomes = enroll_items(&state, org, template_id, items).await?;
    let mut results = Vec::with_capacity(outcomes.len());
    for (index, outcome) in outcomes.into_iter().enumerate() {
        results.push(match outcome {
            Ok(Enrolled::Created(row) | Enrolled::Existing(row)) => BatchResult {
                index,
                status: 201,
                sequence: Some(sequence_json(&state, org, row.id).await?),
                error: None,
            },
            Err(error) => error_result(index, error),
        });
    }
    Ok(Json(
        serde_json::json!({ "data": results, "next_cursor": null }),
    ))
}

/// Checks and enrolls `items` in the organisation's template, each with its own
/// `Idempotency-Key` when given: the path of `POST /v1/sequences/batch` (and, item by item,
/// of `POST /v1/sequences`: the same validation, rendering check, suppression and tenant),
/// shared with the dashboard's CSV upload. Answers each item's outcome in order; an item's
/// error names its field as `items[i].…`. `Err` refuses the whole batch (an unknown
/// template).
pub(crate) async fn enroll_items(
    state: &AppState,
    org: OrgId,
    template_id: TemplateId,
    items: Vec<(BatchItem, Option<String>)>,
) -> Result<Vec<Result<Enrolled, ApiError>>, ApiError> {
    state
        .store
        .get_template(org, template_id)
        .await?
        .ok_or_else(|| ApiError::invalid("template_id", "no such sequence template"))?;
    let scripts = sms_scripts(state, org, template_id).await?;
    let mut results: Vec<Option<Result<Enrolled, ApiError>>> = Vec::with_capacity(items.len());
    let mut requests = Vec::new();
    let mut positions = Vec::new();
    for (index, (item, key)) in items.into_iter().enumerate() {
        let prefix = format!("items[{index}].");
        match request(
            template_id,
            item.contact,
            item.variables,
            item.simulation,
            item.allow_concurrent,
            key,
            &prefix,
        )
        .and_then(|request| check_rendering(&scripts, &request, &prefix).map(|()| request))
        {
            Ok(request) => {
                requests.push(request);
                positions.push(index);
                results.push(None);
            }
            Err(error) => results.push(Some(Err(error))),
        }
    }
    let outcomes = state
        .scheduler
        .enroll_many(org, requests)
        .await
        .map_err(|e| scheduler_error(e, ""))?;
    for (index, outcome) in positions.into_iter().zip(outcomes) {
        results[index] =
            Some(outcome.map_err(|error| scheduler_error(error, &format!("items[{index}]."))));
    }
    Ok(results.into_iter().flatten().collect())
}

/// The internal id of the template a request names by its public id. A number outside the
/// id range becomes 0, which no row has, so it is refused exactly like an unknown template
/// (at the same point of validation).
pub(crate) fn template_of(state: &AppState, org: OrgId, public: i64) -> TemplateId {
    TemplateId(
        state
            .store
            .public_ids(org)
            .decode(IdKind::Template, public)
            .unwrap_or(0),
    )
}

/// The internal id of the sequence a path names.
fn sequence_of(state: &AppState, org: OrgId, public: i64) -> Result<SequenceId, ApiError> {
    wire::internal(
        &state.store.public_ids(org),
        IdKind::Sequence,
        public,
        "sequence",
    )
}

fn error_result(index: usize, error: ApiError) -> BatchResult {
    BatchResult {
        index,
        status: error.status.as_u16(),
        sequence: None,
        error: Some(
            serde_json::json!({ "code": error.code, "message": error.message, "field": error.field }),
        ),
    }
}

#[utoipa::path(get, path = "/v1/sequences/{id}", tag = "sequences",
    responses((status = 200, description = "The sequence in the End of Sequence Report's shape; for an ended sequence, the delivered body"),
               (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let id = sequence_of(&state, org, id)?;
    Ok(raw_response(
        StatusCode::OK,
        &sequence_json(&state, org, id).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/sequences", tag = "sequences",
    params(("status" = Option<String>, Query, description = "active, paused or ended"), ("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, description = "`{\"data\": [sequence, ...], \"next_cursor\"}`"), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Box<RawValue>>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let after = wire::cursor(&ids, IdKind::Sequence, query.after.as_deref())?;
    let status = query
        .status
        .as_deref()
        .map(|status| match status {
            "active" => Ok(SequenceStatus::Active),
            "paused" => Ok(SequenceStatus::Paused),
            "ended" => Ok(SequenceStatus::Ended),
            _ => Err(ApiError::invalid(
                "status",
                "expected active, paused or ended",
            )),
        })
        .transpose()?;
    let rows = state
        .store
        .list_sequences(org, status, after, limit)
        .await?;
    let full_by_rows = rows.len() == limit as usize;
    // Each sequence's JSON is built one at a time, and building stops once the page is large
    // enough: rows past the byte bound are not rendered at all.
    let mut data = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    let mut cut_by_bytes = false;
    let mut last = None;
    for row in rows {
        if bytes >= wire::MAX_PAGE_BYTES {
            cut_by_bytes = true;
            break;
        }
        let json = sequence_json(&state, org, row.id).await?;
        bytes = bytes.saturating_add(json.get().len());
        data.push(json);
        last = Some(row.id);
    }
    let next_cursor = (full_by_rows || cut_by_bytes)
        .then(|| last.map(|id| wire::next_cursor(&ids, IdKind::Sequence, id)))
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}

async fn control(
    state: AppState,
    org: OrgId,
    id: i64,
    control: Control,
) -> Result<Response, ApiError> {
    let id = sequence_of(&state, org, id)?;
    state
        .scheduler
        .control(org, id, control)
        .await
        .map_err(|e| scheduler_error(e, ""))?;
    Ok(raw_response(
        StatusCode::OK,
        &sequence_json(&state, org, id).await?,
    ))
}

#[utoipa::path(post, path = "/v1/sequences/{id}/cancel", tag = "sequences",
    responses((status = 200, description = "The ended sequence; its report is queued"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    control(state, org, id, Control::Cancel).await
}

#[utoipa::path(post, path = "/v1/sequences/{id}/pause", tag = "sequences",
    responses((status = 200, description = "The paused sequence"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    control(state, org, id, Control::Pause).await
}

#[utoipa::path(post, path = "/v1/sequences/{id}/resume", tag = "sequences",
    responses((status = 200, description = "The resumed sequence"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    control(state, org, id, Control::Resume).await
}

/// One history entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    pub id: i64,
    pub at: String,
    /// e.g. `step-scheduled`, `deferred`, `skipped`, `encounter-started`, `encounter-ended`,
    /// `retry-scheduled`, `paused`, `resumed`, `cancelled`, `ended`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The entry's details (`reason` and `until` for a deferral, say).
    #[schema(value_type = Object)]
    pub detail: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/sequences/{id}/events", tag = "sequences",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<EventOut>)), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn events(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Page<EventOut>>, ApiError> {
    let ids = state.store.public_ids(org);
    let id = sequence_of(&state, org, id)?;
    state
        .store
        .get_sequence(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("sequence"))?;
    let limit = wire::limit(query.limit)?;
    let after = wire::cursor(&ids, IdKind::SequenceEvent, query.after.as_deref())?;
    let events = state.store.sequence_events(id, after, limit).await?;
    let rows = events
        .into_iter()
        .map(|e| {
            let cursor = wire::next_cursor(&ids, IdKind::SequenceEvent, e.id);
            let event = EventOut {
                id: ids.encode(IdKind::SequenceEvent, e.id),
                at: wire::time(e.at),
                kind: e.kind,
                detail: e.detail,
            };
            (event, cursor)
        })
        .collect();
    Ok(Json(wire::bounded_page(rows, limit)))
}
