//! `/v1/sequence-templates`: ordered steps, delays, calling hours and stop rules. Every change
//! makes a new version; running sequences keep the version they were enrolled on.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_scheduler::definition::{
    self, DEFAULT_CALLING_HOURS, DEFAULT_SMS_TIMEOUT, HoursDefinition, Invalid, MAX_ATTEMPTS,
    MAX_STEPS, STOP_REASONS, StepDefinition, TemplateDefinition, VoicemailActionDefinition,
    VoicemailPolicy,
};
use clarion_store::{AssistantId, Channel, IdKind, OrgId, PublicIds, TemplateVersion};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, IdPath, Org};
use crate::wire::{self, Page};

/// Body of `POST /v1/sequence-templates` and `PUT /v1/sequence-templates/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateIn {
    pub name: String,
    pub steps: Vec<StepIn>,
    /// Outcomes that end the sequence early: `resolved`, `opt-out`, `declined`, `escalated`.
    /// An opt-out always ends it, listed or not.
    #[serde(default)]
    pub stop_on: Vec<String>,
    /// Local-time window for contact; absent = 08:00–21:00, `null` = no restriction.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<HoursIn>)]
    pub calling_hours: Option<Option<HoursIn>>,
    /// How long an SMS conversation waits for a reply (default `24h`).
    pub sms_timeout: Option<String>,
}

/// One step.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepIn {
    /// `call` or `sms`; must match the assistant's channel.
    #[serde(rename = "type")]
    pub kind: String,
    pub assistant_id: i64,
    /// Wait after the previous step ended (after enrollment for step 1), e.g. `"1h"`.
    #[serde(default = "zero")]
    pub delay: String,
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// Wait between attempts of a call that got no answer, a busy line or voicemail.
    #[serde(default = "four_hours")]
    pub retry_delay: String,
    /// A call step's voicemail policy (absent: voicemail is retried and the assistant's own
    /// behaviour applies).
    pub voicemail: Option<VoicemailIn>,
}

/// What a call step does when it reaches voicemail.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoicemailIn {
    /// Retry the call after a voicemail, like after no answer or a busy line (within
    /// `max_attempts`). Default `true`.
    #[serde(default = "yes")]
    pub retry: bool,
    /// `leave-message` (with `message`) or `hang-up`; absent: the assistant's own behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The message left with `leave-message`, 1 to 500 characters. A voicemail may be heard
    /// by others: name the clinic and ask for a call back, nothing about the patient's care.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// After the step's last voicemail, the next step (which must be an SMS step) starts at
    /// once instead of after its delay. Default `false`.
    #[serde(default)]
    pub sms_follow_up: bool,
    /// After the step's last voicemail (one that is not retried), this fixed text is sent to
    /// the contact by SMS, 1 to 320 characters (trimmed), from the organisation's sender;
    /// then the sequence goes on as it would have (the next step after its delay, or the
    /// end). Not with `sms_follow_up`. Like the voicemail message it may be read by others:
    /// name the clinic and ask for a call back, nothing about the patient's care. It is
    /// checked like any text (calling hours, suppression, the sequence still running) and
    /// appears in the report as an `sms` entry of this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 320)]
    pub sms_text: Option<String>,
}

fn yes() -> bool {
    true
}

/// The longest voicemail message a step may leave.
const MAX_VOICEMAIL_MESSAGE_CHARS: usize = 500;

/// The longest text a step may send after a voicemail: two SMS segments of plain text.
const MAX_VOICEMAIL_TEXT_CHARS: usize = 320;

impl VoicemailIn {
    fn from_policy(policy: &VoicemailPolicy) -> Option<Self> {
        (!policy.is_default()).then(|| {
            let (action, message) = match &policy.action {
                None => (None, None),
                Some(VoicemailActionDefinition::HangUp) => (Some("hang-up".to_owned()), None),
                Some(VoicemailActionDefinition::LeaveMessage(text)) => {
                    (Some("leave-message".to_owned()), Some(text.clone()))
                }
            };
            Self {
                retry: policy.retry,
                action,
                message,
                sms_follow_up: policy.sms_follow_up,
                sms_text: policy.sms_text.clone(),
            }
        })
    }

    /// Checks the policy of step `i` (`next`: the channel of the step after it, if any).
    fn policy(&self, i: usize, next: Option<&str>) -> Result<VoicemailPolicy, ApiError> {
        let at = |f: &str| format!("steps[{i}].voicemail.{f}");
        let message = self.message.as_deref().map(str::trim);
        let action = match (self.action.as_deref(), message) {
            (None, None) => None,
            (Some("hang-up"), None) => Some(VoicemailActionDefinition::HangUp),
            (Some("leave-message"), Some(text))
                if !text.is_empty() && text.chars().count() <= MAX_VOICEMAIL_MESSAGE_CHARS =>
            {
                Some(VoicemailActionDefinition::LeaveMessage(text.to_owned()))
            }
            (Some("leave-message"), _) => {
                return Err(ApiError::invalid(
                    &at("message"),
                    format!(
                        "leave-message needs a message of 1 to {MAX_VOICEMAIL_MESSAGE_CHARS} characters"
                    ),
                ));
            }
            (Some("hang-up") | None, Some(_)) => {
                return Err(ApiError::invalid(
                    &at("message"),
                    "a message goes only with action leave-message",
                ));
            }
            (Some(_), _) => {
                return Err(ApiError::invalid(
                    &at("action"),
                    "action must be leave-message or hang-up",
                ));
            }
        };
        if self.sms_follow_up && next != Some("sms") {
            return Err(ApiError::invalid(
                &at("sms_follow_up"),
                "an SMS follow-up needs an SMS step right after this one",
            ));
        }
        let sms_text = match self.sms_text.as_deref().map(str::trim) {
            None => None,
            Some(_) if self.sms_follow_up => {
                return Err(ApiError::invalid(
                    &at("sms_text"),
                    "sms_text and sms_follow_up cannot be combined: choose one follow-up",
                ));
            }
            Some(text) if !text.is_empty() && text.chars().count() <= MAX_VOICEMAIL_TEXT_CHARS => {
                Some(text.to_owned())
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &at("sms_text"),
                    format!("sms_text must be 1 to {MAX_VOICEMAIL_TEXT_CHARS} characters"),
                ));
            }
        };
        Ok(VoicemailPolicy {
            retry: self.retry,
            action,
            sms_follow_up: self.sms_follow_up,
            sms_text,
        })
    }
}

/// Calling hours, `HH:MM`, local to the contact.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursIn {
    pub start: String,
    pub end: String,
}

fn zero() -> String {
    "0s".to_owned()
}
fn one() -> u32 {
    1
}
fn four_hours() -> String {
    "4h".to_owned()
}

/// Tells an absent key (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A template at its current version.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateOut {
    pub id: i64,
    pub name: String,
    pub version: i64,
    pub steps: Vec<StepOut>,
    pub stop_on: Vec<String>,
    pub calling_hours: Option<HoursIn>,
    pub sms_timeout: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepOut {
    #[serde(rename = "type")]
    pub kind: String,
    pub assistant_id: i64,
    pub delay: String,
    pub max_attempts: u32,
    pub retry_delay: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voicemail: Option<VoicemailIn>,
}

pub fn template_out(ids: &PublicIds, template: TemplateVersion) -> Result<TemplateOut, ApiError> {
    let definition: TemplateDefinition =
        serde_json::from_value(template.definition).map_err(|e| ApiError::internal(&e))?;
    Ok(TemplateOut {
        id: ids.encode(IdKind::Template, template.template_id),
        name: template.name,
        version: template.version,
        steps: definition
            .steps
            .iter()
            .map(|s| StepOut {
                kind: s.channel.as_str().to_owned(),
                assistant_id: ids.encode(IdKind::Assistant, s.assistant_id),
                delay: definition::format_duration(s.delay_ms),
                max_attempts: s.max_attempts,
                retry_delay: definition::format_duration(s.retry_delay_ms),
                voicemail: VoicemailIn::from_policy(&s.voicemail),
            })
            .collect(),
        stop_on: definition.stop_on,
        calling_hours: definition.calling_hours.map(|h| HoursIn {
            start: h.start,
            end: h.end,
        }),
        sms_timeout: definition::format_duration(definition.sms_timeout_ms),
        created_at: wire::time(template.created_at),
        updated_at: wire::time(template.updated_at),
    })
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn from_invalid(error: Invalid) -> ApiError {
    ApiError::invalid(&error.field, error.message)
}

/// Validates a template against the organisation's assistants.
async fn validate(
    state: &AppState,
    org: OrgId,
    body: &TemplateIn,
) -> Result<TemplateDefinition, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name",
            "name must be 1 to 200 characters",
        ));
    }
    if body.steps.is_empty() || body.steps.len() > MAX_STEPS {
        return Err(ApiError::invalid(
            "steps",
            format!("a template has 1 to {MAX_STEPS} steps"),
        ));
    }
    let ids = state.store.public_ids(org);
    let mut steps = Vec::with_capacity(body.steps.len());
    for (i, step) in body.steps.iter().enumerate() {
        let at = |f: &str| format!("steps[{i}].{f}");
        let channel: Channel = step
            .kind
            .parse()
            .map_err(|_| ApiError::invalid(&at("type"), "type must be call or sms"))?;
        let no_such_assistant = || ApiError::invalid(&at("assistant_id"), "no such assistant");
        let assistant_id = ids
            .decode(IdKind::Assistant, step.assistant_id)
            .ok_or_else(no_such_assistant)?;
        let assistant = state
            .store
            .get_assistant(org, AssistantId(assistant_id))
            .await?
            .ok_or_else(no_such_assistant)?;
        if assistant.channel != channel {
            return Err(ApiError::invalid(
                &at("assistant_id"),
                format!(
                    "this assistant handles {}, not {}",
                    assistant.channel, step.kind
                ),
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&step.max_attempts) {
            return Err(ApiError::invalid(
                &at("max_attempts"),
                format!("between 1 and {MAX_ATTEMPTS}"),
            ));
        }
        let delay = definition::parse_duration(&at("delay"), &step.delay).map_err(from_invalid)?;
        let retry = definition::parse_duration(&at("retry_delay"), &step.retry_delay)
            .map_err(from_invalid)?;
        let voicemail = match &step.voicemail {
            None => VoicemailPolicy::default(),
            Some(_) if channel != Channel::Call => {
                return Err(ApiError::invalid(
                    &at("voicemail"),
                    "only a call step has a voicemail policy",
                ));
            }
            Some(policy) => {
                let next = body.steps.get(i + 1).map(|s| s.kind.as_str());
                policy.policy(i, next)?
            }
        };
        steps.push(StepDefinition {
            channel,
            assistant_id,
            delay_ms: millis(delay),
            max_attempts: step.max_attempts,
            retry_delay_ms: millis(retry),
            voicemail,
        });
    }
    let mut stop_on = Vec::new();
    for (i, reason) in body.stop_on.iter().enumerate() {
        if !STOP_REASONS.contains(&reason.as_str()) {
            return Err(ApiError::invalid(
                &format!("stop_on[{i}]"),
                format!("expected one of {}", STOP_REASONS.join(", ")),
            ));
        }
        if !stop_on.contains(reason) {
            stop_on.push(reason.clone());
        }
    }
    let calling_hours = match &body.calling_hours {
        None => Some(HoursDefinition {
            start: DEFAULT_CALLING_HOURS.0.to_owned(),
            end: DEFAULT_CALLING_HOURS.1.to_owned(),
        }),
        Some(None) => None,
        Some(Some(hours)) => {
            let start = definition::parse_time_of_day("calling_hours.start", &hours.start)
                .map_err(from_invalid)?;
            let end = definition::parse_time_of_day("calling_hours.end", &hours.end)
                .map_err(from_invalid)?;
            if start >= end {
                return Err(ApiError::invalid(
                    "calling_hours.end",
                    "end must be after start (windows across midnight are not supported)",
                ));
            }
            Some(HoursDefinition {
                start: start.format("%H:%M").to_string(),
                end: end.format("%H:%M").to_string(),
            })
        }
    };
    let sms_timeout = match &body.sms_timeout {
        Some(text) => definition::parse_duration("sms_timeout", text).map_err(from_invalid)?,
        None => DEFAULT_SMS_TIMEOUT,
    };
    if sms_timeout.is_zero() {
        return Err(ApiError::invalid("sms_timeout", "must be more than zero"));
    }
    Ok(TemplateDefinition {
        steps,
        stop_on,
        calling_hours,
        sms_timeout_ms: millis(sms_timeout),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(post, path = "/v1/sequence-templates", tag = "sequence templates", request_body = TemplateIn,
    responses((status = 201, body = TemplateOut), (status = 422, body = ErrorBody)), security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(body): ApiJson<TemplateIn>,
) -> Result<(StatusCode, Json<TemplateOut>), ApiError> {
    let definition = validate(&state, org, &body).await?;
    let value = serde_json::to_value(&definition).map_err(|e| ApiError::internal(&e))?;
    let now = state.clock.now_millis();
    let template = state
        .store
        .create_template(org, body.name.trim(), &value, now)
        .await?;
    let ids = state.store.public_ids(org);
    Ok((StatusCode::CREATED, Json(template_out(&ids, template)?)))
}

#[utoipa::path(put, path = "/v1/sequence-templates/{id}", tag = "sequence templates", request_body = TemplateIn,
    responses((status = 200, body = TemplateOut), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<TemplateIn>,
) -> Result<Json<TemplateOut>, ApiError> {
    let ids = state.store.public_ids(org);
    let id = wire::internal(&ids, IdKind::Template, id, "sequence template")?;
    state
        .store
        .get_template(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("sequence template"))?;
    let definition = validate(&state, org, &body).await?;
    let value = serde_json::to_value(&definition).map_err(|e| ApiError::internal(&e))?;
    let now = state.clock.now_millis();
    let template = state
        .store
        .update_template(org, id, Some(body.name.trim()), &value, now)
        .await?
        .ok_or_else(|| ApiError::not_found("sequence template"))?;
    Ok(Json(template_out(&ids, template)?))
}

#[utoipa::path(get, path = "/v1/sequence-templates/{id}", tag = "sequence templates",
    responses((status = 200, body = TemplateOut), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<TemplateOut>, ApiError> {
    let ids = state.store.public_ids(org);
    let id = wire::internal(&ids, IdKind::Template, id, "sequence template")?;
    let template = state
        .store
        .get_template(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("sequence template"))?;
    Ok(Json(template_out(&ids, template)?))
}

#[utoipa::path(get, path = "/v1/sequence-templates", tag = "sequence templates",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<TemplateOut>))), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<TemplateOut>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let after = wire::cursor(&ids, IdKind::Template, query.after.as_deref())?;
    let templates = state.store.list_templates(org, after, limit).await?;
    let rows = templates
        .into_iter()
        .map(|t| {
            let cursor = wire::next_cursor(&ids, IdKind::Template, t.template_id);
            template_out(&ids, t).map(|out| (out, cursor))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(wire::bounded_page(rows, limit)))
}
