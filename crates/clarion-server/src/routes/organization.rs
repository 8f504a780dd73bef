//! `/v1/organization`: the calling organisation's settings — its contact caps (how often one
//! number may be contacted, across all sequences and both channels) and the reply to an SMS
//! `HELP`, and its own calling rules (windows and attempt limits on top of every template's
//! calling hours and the built-in state table), and its pre-contact eligibility hook.

use axum::Json;
use axum::extract::State;
use clarion_scheduler::calling_rules::{self, RuleDefinition};
use clarion_scheduler::eligibility::{self, HookSettings, OnError};
use clarion_store::{AllowedCallerNumber, Organization, OrganizationPatch};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Org};
use crate::wire;

/// Contact caps in force: at most `per_day` contacts in any rolling 24 hours and `per_week`
/// in any rolling 7 days per number (0: no cap). A due step that would break a cap waits
/// for the next allowed instant, and the sequence's events say so.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactCapsOut {
    pub per_day: u32,
    pub per_week: u32,
    /// `organization` when this organisation set them, `deployment` when they are the
    /// server's defaults (`[compliance]` in its configuration).
    pub source: &'static str,
}

/// A number the deployment's operator allowed the organisation to call or text from.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowedCallerNumberOut {
    /// `call` or `sms`.
    pub channel: String,
    /// E.164.
    pub number: String,
    /// The provider's id for it: the Vapi phoneNumberId of a call number; for a text number,
    /// `null` unless the operator set one.
    pub provider_id: Option<String>,
}

impl From<AllowedCallerNumber> for AllowedCallerNumberOut {
    fn from(allowed: AllowedCallerNumber) -> Self {
        Self {
            channel: allowed.channel.as_str().to_owned(),
            number: allowed.number,
            provider_id: allowed.provider_id,
        }
    }
}

/// The organisation.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationOut {
    pub id: i64,
    pub name: String,
    pub contact_caps: ContactCapsOut,
    /// The reply to an SMS `HELP` (null: a generic reply naming the organisation).
    pub sms_help_text: Option<String>,
    /// The Vapi assistant ids this organisation's call assistants may name
    /// (`config.vapi_assistant_id`). Read-only: the deployment's operator sets the list
    /// (`clarion org allow-vapi-assistant`); empty, no Vapi assistant may be used.
    pub vapi_assistants: Vec<String>,
    /// The numbers this organisation may call and text from (`/v1/caller-numbers`), by
    /// channel then number. Read-only: the deployment's operator sets the list (`clarion org
    /// allow-caller-number`); a caller number not on it is refused, and no longer chosen.
    pub allowed_caller_numbers: Vec<AllowedCallerNumberOut>,
    /// The organisation's own calling rules, applied to its contacts on top of each
    /// template's calling hours and the built-in US state rules (the strictest window wins).
    #[schema(value_type = Vec<CallingRuleSchema>)]
    pub calling_rules: Vec<RuleDefinition>,
    /// Days after its end that an ended sequence's PHI (transcripts, summaries, analysis
    /// values, the contact's name, external id and variables, its report bodies) is purged;
    /// ids, statuses, times and outcomes stay. Null: kept forever (the default).
    pub retention_days: Option<u32>,
    /// The pre-contact eligibility hook (null: none). Its signing secret is shown only in the
    /// answer of the `PATCH` that created or rotated it.
    pub eligibility_hook: Option<EligibilityHookOut>,
    pub created_at: String,
}

/// The eligibility hook: before each call attempt and each conversation's first text,
/// Clarion POSTs a signed `encounter.eligibility` request to `url` and waits up to
/// `timeout_ms` for the hook's signed answer; `on_error` says what a timeout, an error or an
/// unsigned answer counts as.
#[derive(Debug, Serialize, ToSchema)]
pub struct EligibilityHookOut {
    pub url: String,
    pub timeout_ms: u32,
    /// `not-eligible` (the default) or `eligible`.
    #[schema(value_type = String)]
    pub on_error: OnError,
    /// The signing secret (`whsec_…`): both the requests and the answers are signed with it.
    /// Present only in the answer of the `PATCH` that set the hook first or rotated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The eligibility hook to set (replaces the settings; the secret is kept unless
/// `rotate_secret`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EligibilityHookIn {
    /// `https://…` (plain http only where the deployment allows it); internal addresses are
    /// refused as for webhook endpoints.
    pub url: String,
    /// 100 to 10000; default 3000.
    #[schema(minimum = 100, maximum = 10000)]
    pub timeout_ms: Option<u32>,
    /// `not-eligible` (default) or `eligible`.
    #[schema(value_type = Option<String>)]
    pub on_error: Option<OnError>,
    /// Draws a new signing secret (shown once in this answer); the old one stops at once.
    pub rotate_secret: Option<bool>,
}

/// A calling rule: on the `weekdays` it governs, contact only inside `[start, end)` local
/// time (the contact's zone), or not at all when both are left out; and at most
/// `max_attempts_per_24h` contacts of one number in any 24 hours. A deferral it causes names
/// it in the sequence's events.
#[derive(ToSchema)]
#[allow(dead_code)] // The schema of `RuleDefinition`, which is what (de)serialises.
pub struct CallingRuleSchema {
    /// Names the rule in deferrals; 1 to 64 characters.
    name: String,
    /// Two-letter US state codes the rule applies to; empty or absent: every contact.
    states: Option<Vec<String>>,
    /// `mon` .. `sun`; absent: every day.
    weekdays: Option<Vec<String>>,
    /// `HH:MM`, with `end`.
    start: Option<String>,
    /// `HH:MM`, exclusive, after `start`.
    end: Option<String>,
    /// At least 1.
    max_attempts_per_24h: Option<u32>,
    /// Free-text references (a policy, a statute).
    sources: Option<Vec<String>>,
}

/// Caps to set; an absent window keeps the deployment default for it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactCapsIn {
    pub per_day: Option<u32>,
    pub per_week: Option<u32>,
}

/// Body of `PATCH /v1/organization`: only the keys present change. `contact_caps: null`
/// goes back to the deployment's defaults; `{"per_day": 0, "per_week": 0}` turns caps off
/// for this organisation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationPatchIn {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ContactCapsIn>)]
    pub contact_caps: Option<Option<ContactCapsIn>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub sms_help_text: Option<Option<String>>,
    /// Replaces the organisation's calling rules (at most 50); `null` or `[]` removes them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<CallingRuleSchema>>)]
    pub calling_rules: Option<Option<Vec<RuleDefinition>>>,
    /// 1 to 3650 days; `null`: keep PHI forever.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 3650)]
    pub retention_days: Option<Option<u32>>,
    /// Sets (or replaces) the eligibility hook; `null` removes it and its secret.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<EligibilityHookIn>)]
    pub eligibility_hook: Option<Option<EligibilityHookIn>>,
}

/// A key that is present, `null` or not: `Some(None)` for `null` (absent is `None` through
/// `#[serde(default)]`).
pub(crate) fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The longest retention period accepted (ten years).
const MAX_RETENTION_DAYS: u32 = 3650;

/// The longest HELP reply accepted: one concatenated SMS is at most 1,600 characters.
const MAX_HELP_TEXT_CHARS: usize = 1_600;

async fn organization_out(
    state: &AppState,
    org: Organization,
    new_hook_secret: Option<String>,
) -> Result<OrganizationOut, ApiError> {
    let vapi_assistants = state.store.allowed_vapi_assistants(org.id).await?;
    let allowed_caller_numbers = state.store.allowed_caller_numbers(org.id).await?;
    let own = org.max_contacts_per_day.is_some() || org.max_contacts_per_week.is_some();
    let caps = clarion_scheduler::ContactCaps::resolve(
        state.scheduler.default_contact_caps(),
        org.max_contacts_per_day,
        org.max_contacts_per_week,
    );
    Ok(OrganizationOut {
        id: org.id.0,
        name: org.name,
        contact_caps: ContactCapsOut {
            per_day: caps.map_or(0, |c| c.per_day),
            per_week: caps.map_or(0, |c| c.per_week),
            source: if own { "organization" } else { "deployment" },
        },
        sms_help_text: org.sms_help_text,
        vapi_assistants,
        allowed_caller_numbers: allowed_caller_numbers.into_iter().map(Into::into).collect(),
        calling_rules: calling_rules::stored(org.calling_rules.as_deref()),
        retention_days: org.retention_days,
        eligibility_hook: org
            .eligibility_hook
            .as_deref()
            .and_then(HookSettings::stored)
            .map(|hook| EligibilityHookOut {
                url: hook.url,
                timeout_ms: hook.timeout_ms,
                on_error: hook.on_error,
                secret: new_hook_secret,
            }),
        created_at: wire::time(org.created_at),
    })
}

#[utoipa::path(get, path = "/v1/organization", tag = "organization",
    responses((status = 200, body = OrganizationOut)), security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
) -> Result<Json<OrganizationOut>, ApiError> {
    let found = state
        .store
        .get_organization(org)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(Json(organization_out(&state, found, None).await?))
}

#[utoipa::path(patch, path = "/v1/organization", tag = "organization", request_body = OrganizationPatchIn,
    responses((status = 200, body = OrganizationOut), (status = 422, body = ErrorBody)), security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(body): ApiJson<OrganizationPatchIn>,
) -> Result<Json<OrganizationOut>, ApiError> {
    let mut patch = OrganizationPatch::default();
    if let Some(caps) = body.contact_caps {
        patch.max_contacts_per_day = Some(caps.as_ref().and_then(|c| c.per_day));
        patch.max_contacts_per_week = Some(caps.as_ref().and_then(|c| c.per_week));
    }
    if let Some(text) = body.sms_help_text {
        let text = text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if text
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_HELP_TEXT_CHARS)
        {
            return Err(ApiError::invalid(
                "sms_help_text",
                format!("at most {MAX_HELP_TEXT_CHARS} characters"),
            ));
        }
        patch.sms_help_text = Some(text);
    }
    if let Some(rules) = body.calling_rules {
        let rules = rules.unwrap_or_default();
        calling_rules::validate_rules(&rules)
            .map_err(|invalid| ApiError::invalid(&invalid.field, invalid.message))?;
        patch.calling_rules = Some(if rules.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&rules)
                    .map_err(|_| ApiError::invalid("calling_rules", "cannot be stored"))?,
            )
        });
    }
    if let Some(days) = body.retention_days {
        if days.is_some_and(|d| !(1..=MAX_RETENTION_DAYS).contains(&d)) {
            return Err(ApiError::invalid(
                "retention_days",
                format!("1 to {MAX_RETENTION_DAYS} days, or null to keep PHI forever"),
            ));
        }
        patch.retention_days = Some(days);
    }
    if let Some(hook) = body.eligibility_hook {
        let change = hook_change(&state, hook).await?;
        patch.eligibility_hook = Some(change.settings);
        patch.eligibility_hook_secret = change.secret;
        patch.eligibility_hook_secret_rotates = change.rotates;
    }
    let updated = state
        .store
        .update_organization(org, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    if patch.calling_rules.is_some() || patch.eligibility_hook.is_some() {
        // This node applies them at once; the others within their cache's lifetime.
        state.scheduler.forget_organization_rules(org);
    }
    // A secret is shown only if it is the one stored: a first one loses to another first
    // one set meanwhile (the store keeps that), and its caller must not be handed a secret
    // no request will be signed with.
    let new_secret = match patch.eligibility_hook_secret {
        Some(drawn) => {
            let stored = state
                .store
                .eligibility_hook(org)
                .await?
                .and_then(|h| h.secret);
            (stored.as_deref() == Some(drawn.as_str())).then_some(drawn)
        }
        None => None,
    };
    Ok(Json(organization_out(&state, updated, new_secret).await?))
}

/// What an `eligibility_hook` change stores.
struct HookChange {
    /// The settings, or `None` to remove the hook (and its secret).
    settings: Option<String>,
    /// A new secret, drawn whenever a hook is set: stored if the hook has none yet, or if
    /// `rotates`.
    secret: Option<String>,
    rotates: bool,
}

/// What an `eligibility_hook` change stores. The URL is checked as a webhook endpoint's.
/// A secret is drawn for every hook set; the store decides, in the update itself, whether
/// it is needed (the hook's first) or replaces the stored one (`rotate_secret`), so that
/// two first settings racing cannot each believe their secret is the hook's.
async fn hook_change(
    state: &AppState,
    hook: Option<EligibilityHookIn>,
) -> Result<HookChange, ApiError> {
    let Some(hook) = hook else {
        return Ok(HookChange {
            settings: None,
            secret: None,
            rotates: false,
        });
    };
    crate::validate_target(&state.ssrf, &hook.url)
        .await
        .map_err(|error| error.with_field("eligibility_hook.url"))?;
    let timeout_ms = hook.timeout_ms.unwrap_or(eligibility::DEFAULT_TIMEOUT_MS);
    if !eligibility::TIMEOUT_RANGE_MS.contains(&timeout_ms) {
        return Err(ApiError::invalid(
            "eligibility_hook.timeout_ms",
            "100 to 10000 milliseconds",
        ));
    }
    let settings = HookSettings {
        url: hook.url,
        timeout_ms,
        on_error: hook.on_error.unwrap_or_default(),
    };
    let stored = serde_json::to_string(&settings)
        .map_err(|_| ApiError::invalid("eligibility_hook", "cannot be stored"))?;
    Ok(HookChange {
        settings: Some(stored),
        secret: Some(crate::routes::endpoints::new_secret()),
        rotates: hook.rotate_secret == Some(true),
    })
}
