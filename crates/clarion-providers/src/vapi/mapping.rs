//! From Vapi's `endedReason` and analysis to Clarion's call result.
//!
//! Vapi ends a call with one of 571 `endedReason` strings (June 2026 SDK) and keeps adding
//! more; Clarion's report speaks a small vocabulary (`ended_reason`, `outcome`,
//! `failure_reason`, the same the simulator uses, so reports read alike whichever provider
//! carried the call) and the engine a smaller one (the encounter outcome that decides whether
//! the sequence stops, retries or goes on). [`ENDED_REASONS`] is the whole mapping as data:
//! one row per non-templated Vapi value (providers.md §1.4, meanings from Vapi's
//! `call-ended-reason` page; §1.4 says "73", but its brace lists expand to the 84 listed
//! here) plus one row per templated family prefix. [`markdown_table`]
//! renders it for the README, and the tests walk every row.
//!
//! # Two kinds of row
//!
//! * **Fixed**: the reason alone says what happened — `customer-busy` is `busy`, `voicemail`
//!   is `voicemail`, every start error, telephony failure and provider fault is `failed`.
//! * **By analysis**: the call connected and a conversation happened (`customer-ended-call`,
//!   `assistant-ended-call`, `silence-timed-out`, `exceeded-max-duration` and their variants);
//!   *how* it ended says little about *whether it worked*. The outcome then comes from Vapi's
//!   post-call analysis ([`outcome_from_analysis`]):
//!   1. `structuredData.outcome`, when the assistant's analysis plan extracts one of
//!      [`STRUCTURED_OUTCOMES`] (case-insensitive; `_` or space may stand for `-`), wins;
//!   2. else `successEvaluation` equal to `"true"` (the PassFail rubric) → `resolved`;
//!   3. else `unresolved` with no failure reason. Other rubrics (numeric scales, …) are not
//!      interpreted: configure PassFail, or better, extract `outcome`.
//!
//! # Choices where Vapi's meaning leaves room
//!
//! * Carrier "completed" reasons (`call.in-progress.twilio-completed-call`, `vonage-completed`,
//!   `call.in-progress.sip-completed-call`) mean the far end hung up a call that was up: they
//!   are treated like `customer-ended-call`. Calling them failures would retry — and so call
//!   again — a patient who may already have confirmed.
//! * SIP `408` and `480` are "phone rang but no answer" in Vapi's own diagnosis table, so they
//!   map to `no-answer`, not `failed`.
//! * A transfer that the contact asked for but that did not complete (transfer errors, warm
//!   transfer time-outs, `call.forwarding.operator-busy`) is `ended_reason = failed` with
//!   `outcome = unresolved`, `failure_reason = escalated`: the contact needs a person, so the
//!   sequence stops on escalation and staff follow up, and `failed` tells them the hand-off
//!   did not happen.
//! * `call.ringing.sip-inbound-caller-hungup-before-call-connect` (inbound only) is the
//!   customer hanging up: `customer-dropped`.
//! * Anything unknown — a value added after this table, the `pipeline-error-…` family, or the
//!   `vapifault`/`providerfault` families — is `failed` ("treat any unknown value as system
//!   error", §1.4). The report's `ended_reason` is then `failed`, not Vapi's raw string, so
//!   receivers see one vocabulary; the raw string stays in Clarion's event log.

use clarion_channels::report_map;
use clarion_webhooks::{CallEndedReason, CallOutcome, CallStatus, FailureReason};
use serde_json::Value;

use super::wire::VapiAnalysis;

/// How a row matches Vapi's `endedReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonMatch {
    /// Exactly this value.
    Exact(&'static str),
    /// Any value starting with this prefix (templated families). Exact rows win over prefix
    /// rows, and a longer prefix over a shorter one.
    Prefix(&'static str),
}

impl ReasonMatch {
    /// The value or prefix.
    pub fn text(self) -> &'static str {
        match self {
            ReasonMatch::Exact(text) | ReasonMatch::Prefix(text) => text,
        }
    }
}

/// What a row says about the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The reason decides.
    Fixed {
        /// The report's `outcome`.
        outcome: CallOutcome,
        /// The report's `failure_reason`.
        failure_reason: Option<FailureReason>,
    },
    /// The call connected: the analysis decides (module docs).
    ByAnalysis,
}

/// One row of the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedReasonRow {
    /// Which Vapi values the row covers.
    pub vapi: ReasonMatch,
    /// The group in Vapi's documentation (for the rendered table).
    pub group: &'static str,
    /// The report's `ended_reason`.
    pub ended_reason: CallEndedReason,
    /// The outcome, fixed or from the analysis.
    pub verdict: Verdict,
}

const fn row(
    vapi: &'static str,
    group: &'static str,
    ended_reason: CallEndedReason,
    outcome: CallOutcome,
    failure_reason: Option<FailureReason>,
) -> EndedReasonRow {
    EndedReasonRow {
        vapi: ReasonMatch::Exact(vapi),
        group,
        ended_reason,
        verdict: Verdict::Fixed {
            outcome,
            failure_reason,
        },
    }
}

const fn connected(
    vapi: &'static str,
    group: &'static str,
    ended_reason: CallEndedReason,
) -> EndedReasonRow {
    EndedReasonRow {
        vapi: ReasonMatch::Exact(vapi),
        group,
        ended_reason,
        verdict: Verdict::ByAnalysis,
    }
}

const fn failed(vapi: &'static str, group: &'static str) -> EndedReasonRow {
    row(
        vapi,
        group,
        CallEndedReason::Failed,
        CallOutcome::Failed,
        None,
    )
}

const fn failed_family(prefix: &'static str) -> EndedReasonRow {
    EndedReasonRow {
        vapi: ReasonMatch::Prefix(prefix),
        group: "provider fault (templated)",
        ended_reason: CallEndedReason::Failed,
        verdict: Verdict::Fixed {
            outcome: CallOutcome::Failed,
            failure_reason: None,
        },
    }
}

const fn transfer_failed(vapi: &'static str) -> EndedReasonRow {
    row(
        vapi,
        HOOKS,
        CallEndedReason::Failed,
        CallOutcome::Unresolved,
        Some(FailureReason::Escalated),
    )
}

const fn forwarded(vapi: &'static str, group: &'static str) -> EndedReasonRow {
    row(
        vapi,
        group,
        CallEndedReason::AssistantForwarded,
        CallOutcome::Unresolved,
        Some(FailureReason::Escalated),
    )
}

const fn no_answer(vapi: &'static str, group: &'static str) -> EndedReasonRow {
    row(
        vapi,
        group,
        CallEndedReason::CustomerDidNotAnswer,
        CallOutcome::NoAnswer,
        None,
    )
}

const CUSTOMER: &str = "customer";
const ASSISTANT: &str = "assistant";
const OTHER: &str = "timeouts and other";
const START: &str = "start error";
const TELEPHONY: &str = "telephony";
const HOOKS: &str = "transfers and hooks";

/// The mapping: every non-templated `endedReason` of providers.md §1.4, then the templated
/// families. Values not listed here map like [`UNKNOWN`].
pub const ENDED_REASONS: &[EndedReasonRow] = &[
    // Customer.
    connected(
        "customer-ended-call",
        CUSTOMER,
        CallEndedReason::CustomerEnded,
    ),
    row(
        "customer-busy",
        CUSTOMER,
        CallEndedReason::CustomerBusy,
        CallOutcome::Busy,
        None,
    ),
    no_answer("customer-did-not-answer", CUSTOMER),
    failed("customer-did-not-give-microphone-permission", CUSTOMER),
    connected(
        "customer-ended-call-before-warm-transfer",
        CUSTOMER,
        CallEndedReason::CustomerEnded,
    ),
    connected(
        "customer-ended-call-after-warm-transfer-attempt",
        CUSTOMER,
        CallEndedReason::CustomerEnded,
    ),
    connected(
        "customer-ended-call-during-transfer",
        CUSTOMER,
        CallEndedReason::CustomerEnded,
    ),
    failed(
        "call.in-progress.error-assistant-did-not-receive-customer-audio",
        CUSTOMER,
    ),
    // Assistant.
    connected(
        "assistant-ended-call",
        ASSISTANT,
        CallEndedReason::AssistantEnded,
    ),
    connected(
        "assistant-said-end-call-phrase",
        ASSISTANT,
        CallEndedReason::AssistantEnded,
    ),
    connected(
        "assistant-ended-call-with-hangup-task",
        ASSISTANT,
        CallEndedReason::AssistantEnded,
    ),
    connected(
        "assistant-ended-call-after-message-spoken",
        ASSISTANT,
        CallEndedReason::AssistantEnded,
    ),
    forwarded("assistant-forwarded-call", ASSISTANT),
    failed("assistant-join-timed-out", ASSISTANT),
    // Timeouts and other.
    connected(
        "exceeded-max-duration",
        OTHER,
        CallEndedReason::ExceededMaxDuration,
    ),
    connected("silence-timed-out", OTHER, CallEndedReason::SilenceTimedOut),
    row(
        "voicemail",
        OTHER,
        CallEndedReason::Voicemail,
        CallOutcome::Voicemail,
        None,
    ),
    failed("manually-canceled", OTHER),
    failed("call-deleted", OTHER),
    failed("scheduled-call-deleted", OTHER),
    failed("worker-shutdown", OTHER),
    // Start errors.
    failed("call-start-error-neither-assistant-nor-server-set", START),
    failed("assistant-not-valid", START),
    failed("assistant-not-found", START),
    failed("assistant-request-failed", START),
    failed("assistant-request-returned-error", START),
    failed("assistant-request-returned-unspeakable-error", START),
    failed("assistant-request-returned-invalid-assistant", START),
    failed("assistant-request-returned-no-assistant", START),
    failed("assistant-request-returned-forwarding-phone-number", START),
    failed("call.start.error-vapifault-get-org", START),
    failed("call.start.error-vapifault-get-subscription", START),
    failed("call.start.error-vapifault-database-error", START),
    failed("call.start.error-get-assistant", START),
    failed("call.start.error-get-phone-number", START),
    failed("call.start.error-get-customer", START),
    failed("call.start.error-get-resources-validation", START),
    failed("call.start.error-get-transport", START),
    failed("call.start.error-vapi-number-international", START),
    failed("call.start.error-vapi-number-outbound-daily-limit", START),
    failed("call.start.error-fraud-check-failed", START),
    failed(
        "call.start.error-enterprise-feature-not-available-recording-consent",
        START,
    ),
    failed("call.start.error-subscription-wallet-does-not-exist", START),
    failed("call.start.error-subscription-frozen", START),
    failed("call.start.error-subscription-insufficient-credits", START),
    failed("call.start.error-subscription-upgrade-failed", START),
    failed(
        "call.start.error-subscription-concurrency-limit-reached",
        START,
    ),
    // Telephony.
    failed("twilio-failed-to-connect-call", TELEPHONY),
    failed("twilio-reported-customer-misdialed", TELEPHONY),
    connected(
        "call.in-progress.twilio-completed-call",
        TELEPHONY,
        CallEndedReason::CustomerEnded,
    ),
    failed("vonage-disconnected", TELEPHONY),
    failed("vonage-failed-to-connect-call", TELEPHONY),
    failed("vonage-rejected", TELEPHONY),
    connected(
        "vonage-completed",
        TELEPHONY,
        CallEndedReason::CustomerEnded,
    ),
    failed("phone-call-provider-closed-websocket", TELEPHONY),
    failed(
        "phone-call-provider-bypass-enabled-but-no-call-received",
        TELEPHONY,
    ),
    connected(
        "call.in-progress.sip-completed-call",
        TELEPHONY,
        CallEndedReason::CustomerEnded,
    ),
    failed(
        "call.in-progress.error-sip-inbound-call-failed-to-connect",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-sip-outbound-call-failed-to-connect",
        TELEPHONY,
    ),
    failed(
        "call.ringing.error-sip-inbound-call-failed-to-connect",
        TELEPHONY,
    ),
    row(
        "call.ringing.sip-inbound-caller-hungup-before-call-connect",
        TELEPHONY,
        CallEndedReason::CustomerEnded,
        CallOutcome::Unresolved,
        Some(FailureReason::CustomerDropped),
    ),
    failed(
        "call.in-progress.error-providerfault-outbound-sip-403-forbidden",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-providerfault-outbound-sip-407-proxy-authentication-required",
        TELEPHONY,
    ),
    no_answer(
        "call.in-progress.error-providerfault-outbound-sip-408-request-timeout",
        TELEPHONY,
    ),
    no_answer(
        "call.in-progress.error-providerfault-outbound-sip-480-temporarily-unavailable",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-providerfault-outbound-sip-503-service-unavailable",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-vapifault-transport-never-connected",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-providerfault-transport-never-connected",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-vapifault-transport-connected-but-call-not-active",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-vapifault-call-started-but-connection-to-transport-missing",
        TELEPHONY,
    ),
    failed(
        "call.in-progress.error-vapifault-worker-not-available",
        TELEPHONY,
    ),
    failed("call.in-progress.error-vapifault-worker-died", TELEPHONY),
    // Transfers and hooks.
    transfer_failed("call.in-progress.error-transfer-failed"),
    transfer_failed("call.in-progress.error-warm-transfer-max-duration"),
    transfer_failed("call.in-progress.error-warm-transfer-assistant-cancelled"),
    transfer_failed("call.in-progress.error-warm-transfer-silence-timeout"),
    transfer_failed("call.in-progress.error-warm-transfer-microphone-timeout"),
    transfer_failed("call.forwarding.operator-busy"),
    failed("call.ringing.hook-executed-say", HOOKS),
    forwarded("call.ringing.hook-executed-transfer", HOOKS),
    connected(
        "call.ending.hook-executed-say",
        HOOKS,
        CallEndedReason::AssistantEnded,
    ),
    forwarded("call.ending.hook-executed-transfer", HOOKS),
    failed(
        "call.in-progress.error-pipeline-no-available-llm-model",
        HOOKS,
    ),
    failed(
        "call.in-progress.error-pipeline-ws-model-connection-failed",
        HOOKS,
    ),
    // Templated provider-fault families (§1.4): 245 + 170 + 83 values.
    failed_family("pipeline-error-"),
    failed_family("call.in-progress.error-vapifault-"),
    failed_family("call.in-progress.error-providerfault-"),
];

/// How a value that no row matches is mapped: a system failure.
pub const UNKNOWN: EndedReasonRow = EndedReasonRow {
    vapi: ReasonMatch::Prefix(""),
    group: "unknown",
    ended_reason: CallEndedReason::Failed,
    verdict: Verdict::Fixed {
        outcome: CallOutcome::Failed,
        failure_reason: None,
    },
};

/// The outcomes an analysis plan may put in `structuredData.outcome`.
pub const STRUCTURED_OUTCOMES: [&str; 8] = [
    "resolved",
    "unresolved",
    "declined",
    "escalated",
    "requested-callback",
    "customer-dropped",
    "assistant-ended",
    "opt-out",
];

/// The key of the outcome in `structuredData`.
pub const STRUCTURED_OUTCOME_KEY: &str = "outcome";

/// `structuredData` keys that, when `true` (or the text `"true"`/`"yes"`), say the patient
/// revoked consent, whatever `outcome` says. Compared without case, `_`, `-` or spaces, so
/// `opt_out`, `optOut` and `Opt-Out` are the same key.
pub const STRUCTURED_OPT_OUT_FLAGS: [&str; 9] = [
    "opt_out",
    "opted_out",
    "do_not_call",
    "do_not_contact",
    "revoked_consent",
    "consent_revoked",
    "unsubscribe",
    "unsubscribed",
    "stop_contact",
];

/// The `structuredData` key of a set opt-out flag ([`STRUCTURED_OPT_OUT_FLAGS`]), if any.
pub fn structured_opt_out_flag(analysis: &VapiAnalysis) -> Option<&str> {
    let squash = |key: &str| -> String {
        key.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let flags: Vec<String> = STRUCTURED_OPT_OUT_FLAGS.iter().map(|k| squash(k)).collect();
    analysis
        .structured_data
        .as_ref()?
        .iter()
        .find(|(key, value)| {
            let set = match value {
                Value::Bool(set) => *set,
                Value::String(text) => {
                    let text = text.trim();
                    text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("yes")
                }
                _ => false,
            };
            set && flags.contains(&squash(key))
        })
        .map(|(key, _)| key.as_str())
}

/// The row for a Vapi `endedReason`: an exact row, else the longest matching prefix row,
/// else [`UNKNOWN`].
pub fn lookup(ended_reason: &str) -> &'static EndedReasonRow {
    let reason = ended_reason.trim();
    ENDED_REASONS
        .iter()
        .find(|row| matches!(row.vapi, ReasonMatch::Exact(text) if text == reason))
        .or_else(|| {
            ENDED_REASONS
                .iter()
                .filter(|row| {
                    matches!(row.vapi, ReasonMatch::Prefix(prefix) if reason.starts_with(prefix))
                })
                .max_by_key(|row| row.vapi.text().len())
        })
        .unwrap_or(&UNKNOWN)
}

/// What decided a call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// The `endedReason` alone (a fixed row).
    EndedReason,
    /// `analysis.structuredData.outcome`.
    StructuredData,
    /// `analysis.successEvaluation` was `"true"`.
    SuccessEvaluation,
    /// A connected call with nothing usable in the analysis: `unresolved`.
    Default,
}

/// Clarion's reading of how a Vapi call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    /// The report's `ended_reason`.
    pub ended_reason: CallEndedReason,
    /// The report's `outcome`.
    pub outcome: CallOutcome,
    /// The report's `failure_reason`.
    pub failure_reason: Option<FailureReason>,
    /// The encounter outcome the scheduler gives the engine (kebab-case: `resolved`,
    /// `no-answer`, `opt-out`, …): the failure reason when there is one, else the outcome.
    pub engine_outcome: &'static str,
    /// Whether the row is a connected-call row (the analysis was consulted).
    pub connected: bool,
    /// What decided the outcome.
    pub decided_by: DecidedBy,
}

/// Maps an end-of-call report's `endedReason` and `analysis` (module docs).
pub fn map_end_of_call(ended_reason: &str, analysis: &VapiAnalysis) -> CallResult {
    let row = lookup(ended_reason);
    let (outcome, failure_reason, decided_by) = match &row.verdict {
        Verdict::Fixed {
            outcome,
            failure_reason,
        } => (outcome.clone(), *failure_reason, DecidedBy::EndedReason),
        Verdict::ByAnalysis => outcome_from_analysis(analysis),
    };
    CallResult {
        ended_reason: row.ended_reason.clone(),
        engine_outcome: engine_outcome(&outcome, failure_reason),
        outcome,
        failure_reason,
        connected: row.verdict == Verdict::ByAnalysis,
        decided_by,
    }
}

/// The outcome of a connected call from its analysis (module docs, steps 1–3).
pub fn outcome_from_analysis(
    analysis: &VapiAnalysis,
) -> (CallOutcome, Option<FailureReason>, DecidedBy) {
    let structured = analysis
        .structured_data
        .as_ref()
        .and_then(|data| data.get(STRUCTURED_OUTCOME_KEY))
        .and_then(Value::as_str)
        .and_then(parse_structured_outcome);
    if let Some((outcome, failure_reason)) = structured {
        return (outcome, failure_reason, DecidedBy::StructuredData);
    }
    let success = analysis
        .success_evaluation
        .as_deref()
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
    if success {
        (CallOutcome::Resolved, None, DecidedBy::SuccessEvaluation)
    } else {
        (CallOutcome::Unresolved, None, DecidedBy::Default)
    }
}

fn parse_structured_outcome(text: &str) -> Option<(CallOutcome, Option<FailureReason>)> {
    let normalized: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '_' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let unresolved = |reason| Some((CallOutcome::Unresolved, Some(reason)));
    match normalized.as_str() {
        "resolved" => Some((CallOutcome::Resolved, None)),
        "unresolved" => Some((CallOutcome::Unresolved, None)),
        "declined" => unresolved(FailureReason::Declined),
        "escalated" => unresolved(FailureReason::Escalated),
        "requested-callback" => unresolved(FailureReason::RequestedCallback),
        "customer-dropped" => unresolved(FailureReason::CustomerDropped),
        "assistant-ended" => unresolved(FailureReason::AssistantEnded),
        "opt-out" => unresolved(FailureReason::OptOut),
        _ => None,
    }
}

/// The wire name of a failure reason (the engine outcome it stands for).
pub fn failure_reason_str(reason: FailureReason) -> &'static str {
    report_map::encounter_outcome_of_failure(reason).as_str()
}

/// The engine's encounter outcome for a report outcome: the failure reason when there is one
/// (as the simulator reports them), else the outcome ([`report_map`], shared by every channel).
fn engine_outcome(outcome: &CallOutcome, failure_reason: Option<FailureReason>) -> &'static str {
    report_map::encounter_outcome_of_call(outcome, failure_reason).as_str()
}

/// The report's `call_status` for a Vapi status; `None` for the statuses the report does not
/// have (`scheduled`, `not-found`, `deletion-failed`) and for unknown values.
pub fn call_status(vapi_status: &str) -> Option<CallStatus> {
    match vapi_status.trim() {
        "queued" => Some(CallStatus::Queued),
        "ringing" => Some(CallStatus::Ringing),
        "in-progress" => Some(CallStatus::InProgress),
        "forwarding" => Some(CallStatus::Forwarding),
        "ended" => Some(CallStatus::Ended),
        _ => None,
    }
}

/// The mapping as a Markdown table, one row per entry of [`ENDED_REASONS`] plus the unknown
/// row, for the README.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Vapi `endedReason` | group | `ended_reason` | `outcome` | `failure_reason` | engine outcome |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in ENDED_REASONS.iter().chain([&UNKNOWN]) {
        let vapi = match row.vapi {
            ReasonMatch::Exact(text) => format!("`{text}`"),
            ReasonMatch::Prefix("") => "any other value".to_owned(),
            ReasonMatch::Prefix(prefix) => format!("`{prefix}…`"),
        };
        let (outcome, failure, engine) = match &row.verdict {
            Verdict::Fixed {
                outcome,
                failure_reason,
            } => (
                format!("`{}`", outcome.as_str()),
                failure_reason.map_or_else(
                    || "—".to_owned(),
                    |reason| format!("`{}`", failure_reason_str(reason)),
                ),
                format!("`{}`", engine_outcome(outcome, *failure_reason)),
            ),
            Verdict::ByAnalysis => (
                "from analysis".to_owned(),
                "from analysis".to_owned(),
                "from analysis".to_owned(),
            ),
        };
        out.push_str(&format!(
            "| {vapi} | {} | `{}` | {outcome} | {failure} | {engine} |\n",
            row.group,
            row.ended_reason.as_str(),
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use clarion_channels::EncounterOutcome;
    use serde_json::{Map, json};

    use super::*;

    use CallEndedReason as E;
    use CallOutcome as O;
    use FailureReason as F;

    fn analysis(structured_outcome: Option<&str>, success: Option<&str>) -> VapiAnalysis {
        VapiAnalysis {
            structured_data: structured_outcome.map(|outcome| {
                let mut data = Map::new();
                data.insert("outcome".into(), json!(outcome));
                data
            }),
            success_evaluation: success.map(str::to_owned),
            ..VapiAnalysis::default()
        }
    }

    /// The expected mapping of every exact row, written out independently of the table:
    /// (Vapi value, ended_reason, Some((outcome, failure)) for fixed rows / None for
    /// connected rows).
    type Expected = (&'static str, E, Option<(O, Option<F>)>);

    fn expected() -> Vec<Expected> {
        let fail = Some((O::Failed, None));
        let escalated = Some((O::Unresolved, Some(F::Escalated)));
        let no_answer = Some((O::NoAnswer, None));
        vec![
            ("customer-ended-call", E::CustomerEnded, None),
            ("customer-busy", E::CustomerBusy, Some((O::Busy, None))),
            (
                "customer-did-not-answer",
                E::CustomerDidNotAnswer,
                no_answer.clone(),
            ),
            (
                "customer-did-not-give-microphone-permission",
                E::Failed,
                fail.clone(),
            ),
            (
                "customer-ended-call-before-warm-transfer",
                E::CustomerEnded,
                None,
            ),
            (
                "customer-ended-call-after-warm-transfer-attempt",
                E::CustomerEnded,
                None,
            ),
            (
                "customer-ended-call-during-transfer",
                E::CustomerEnded,
                None,
            ),
            (
                "call.in-progress.error-assistant-did-not-receive-customer-audio",
                E::Failed,
                fail.clone(),
            ),
            ("assistant-ended-call", E::AssistantEnded, None),
            ("assistant-said-end-call-phrase", E::AssistantEnded, None),
            (
                "assistant-ended-call-with-hangup-task",
                E::AssistantEnded,
                None,
            ),
            (
                "assistant-ended-call-after-message-spoken",
                E::AssistantEnded,
                None,
            ),
            (
                "assistant-forwarded-call",
                E::AssistantForwarded,
                escalated.clone(),
            ),
            ("assistant-join-timed-out", E::Failed, fail.clone()),
            ("exceeded-max-duration", E::ExceededMaxDuration, None),
            ("silence-timed-out", E::SilenceTimedOut, None),
            ("voicemail", E::Voicemail, Some((O::Voicemail, None))),
            ("manually-canceled", E::Failed, fail.clone()),
            ("call-deleted", E::Failed, fail.clone()),
            ("scheduled-call-deleted", E::Failed, fail.clone()),
            ("worker-shutdown", E::Failed, fail.clone()),
            (
                "call-start-error-neither-assistant-nor-server-set",
                E::Failed,
                fail.clone(),
            ),
            ("assistant-not-valid", E::Failed, fail.clone()),
            ("assistant-not-found", E::Failed, fail.clone()),
            ("assistant-request-failed", E::Failed, fail.clone()),
            ("assistant-request-returned-error", E::Failed, fail.clone()),
            (
                "assistant-request-returned-unspeakable-error",
                E::Failed,
                fail.clone(),
            ),
            (
                "assistant-request-returned-invalid-assistant",
                E::Failed,
                fail.clone(),
            ),
            (
                "assistant-request-returned-no-assistant",
                E::Failed,
                fail.clone(),
            ),
            (
                "assistant-request-returned-forwarding-phone-number",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-vapifault-get-org",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-vapifault-get-subscription",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-vapifault-database-error",
                E::Failed,
                fail.clone(),
            ),
            ("call.start.error-get-assistant", E::Failed, fail.clone()),
            ("call.start.error-get-phone-number", E::Failed, fail.clone()),
            ("call.start.error-get-customer", E::Failed, fail.clone()),
            (
                "call.start.error-get-resources-validation",
                E::Failed,
                fail.clone(),
            ),
            ("call.start.error-get-transport", E::Failed, fail.clone()),
            (
                "call.start.error-vapi-number-international",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-vapi-number-outbound-daily-limit",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-fraud-check-failed",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-enterprise-feature-not-available-recording-consent",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-subscription-wallet-does-not-exist",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-subscription-frozen",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-subscription-insufficient-credits",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-subscription-upgrade-failed",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.start.error-subscription-concurrency-limit-reached",
                E::Failed,
                fail.clone(),
            ),
            ("twilio-failed-to-connect-call", E::Failed, fail.clone()),
            (
                "twilio-reported-customer-misdialed",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.twilio-completed-call",
                E::CustomerEnded,
                None,
            ),
            ("vonage-disconnected", E::Failed, fail.clone()),
            ("vonage-failed-to-connect-call", E::Failed, fail.clone()),
            ("vonage-rejected", E::Failed, fail.clone()),
            ("vonage-completed", E::CustomerEnded, None),
            (
                "phone-call-provider-closed-websocket",
                E::Failed,
                fail.clone(),
            ),
            (
                "phone-call-provider-bypass-enabled-but-no-call-received",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.sip-completed-call",
                E::CustomerEnded,
                None,
            ),
            (
                "call.in-progress.error-sip-inbound-call-failed-to-connect",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-sip-outbound-call-failed-to-connect",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.ringing.error-sip-inbound-call-failed-to-connect",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.ringing.sip-inbound-caller-hungup-before-call-connect",
                E::CustomerEnded,
                Some((O::Unresolved, Some(F::CustomerDropped))),
            ),
            (
                "call.in-progress.error-providerfault-outbound-sip-403-forbidden",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-providerfault-outbound-sip-407-proxy-authentication-required",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-providerfault-outbound-sip-408-request-timeout",
                E::CustomerDidNotAnswer,
                no_answer.clone(),
            ),
            (
                "call.in-progress.error-providerfault-outbound-sip-480-temporarily-unavailable",
                E::CustomerDidNotAnswer,
                no_answer,
            ),
            (
                "call.in-progress.error-providerfault-outbound-sip-503-service-unavailable",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-vapifault-transport-never-connected",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-providerfault-transport-never-connected",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-vapifault-transport-connected-but-call-not-active",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-vapifault-call-started-but-connection-to-transport-missing",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-vapifault-worker-not-available",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-vapifault-worker-died",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-transfer-failed",
                E::Failed,
                escalated.clone(),
            ),
            (
                "call.in-progress.error-warm-transfer-max-duration",
                E::Failed,
                escalated.clone(),
            ),
            (
                "call.in-progress.error-warm-transfer-assistant-cancelled",
                E::Failed,
                escalated.clone(),
            ),
            (
                "call.in-progress.error-warm-transfer-silence-timeout",
                E::Failed,
                escalated.clone(),
            ),
            (
                "call.in-progress.error-warm-transfer-microphone-timeout",
                E::Failed,
                escalated.clone(),
            ),
            (
                "call.forwarding.operator-busy",
                E::Failed,
                escalated.clone(),
            ),
            ("call.ringing.hook-executed-say", E::Failed, fail.clone()),
            (
                "call.ringing.hook-executed-transfer",
                E::AssistantForwarded,
                escalated.clone(),
            ),
            ("call.ending.hook-executed-say", E::AssistantEnded, None),
            (
                "call.ending.hook-executed-transfer",
                E::AssistantForwarded,
                escalated,
            ),
            (
                "call.in-progress.error-pipeline-no-available-llm-model",
                E::Failed,
                fail.clone(),
            ),
            (
                "call.in-progress.error-pipeline-ws-model-connection-failed",
                E::Failed,
                fail,
            ),
        ]
    }

    #[test]
    fn every_exact_row_maps_as_written_out() {
        let expected = expected();
        let exact: Vec<_> = ENDED_REASONS
            .iter()
            .filter_map(|row| match row.vapi {
                ReasonMatch::Exact(text) => Some(text),
                ReasonMatch::Prefix(_) => None,
            })
            .collect();
        // Same values, same order, no extras on either side.
        let listed: Vec<_> = expected.iter().map(|(vapi, _, _)| *vapi).collect();
        assert_eq!(exact, listed);
        let no_analysis = VapiAnalysis::default();
        for (vapi, ended, fixed) in expected {
            let result = map_end_of_call(vapi, &no_analysis);
            assert_eq!(result.ended_reason, ended, "{vapi}");
            match fixed {
                Some((outcome, failure)) => {
                    assert!(!result.connected, "{vapi}");
                    assert_eq!(result.decided_by, DecidedBy::EndedReason, "{vapi}");
                    assert_eq!(result.outcome, outcome, "{vapi}");
                    assert_eq!(result.failure_reason, failure, "{vapi}");
                }
                None => {
                    assert!(result.connected, "{vapi}");
                    assert_eq!(result.decided_by, DecidedBy::Default, "{vapi}");
                    assert_eq!(result.outcome, O::Unresolved, "{vapi}");
                    assert_eq!(result.failure_reason, None, "{vapi}");
                }
            }
        }
    }

    #[test]
    fn the_table_lists_each_value_once() {
        let mut seen = BTreeSet::new();
        for row in ENDED_REASONS {
            assert!(
                seen.insert(row.vapi.text()),
                "{} listed twice",
                row.vapi.text()
            );
            assert!(!row.vapi.text().is_empty());
        }
        // The 84 values that §1.4's brace lists expand to, and the three templated families.
        let exact = ENDED_REASONS
            .iter()
            .filter(|row| matches!(row.vapi, ReasonMatch::Exact(_)))
            .count();
        assert_eq!(exact, 84);
        assert_eq!(ENDED_REASONS.len(), 87);
    }

    #[test]
    fn every_result_speaks_the_engine_and_simulator_vocabulary() {
        let call_outcomes: BTreeSet<&str> =
            EncounterOutcome::CALL.iter().map(|o| o.as_str()).collect();
        let analyses = [
            VapiAnalysis::default(),
            analysis(None, Some("true")),
            analysis(Some("declined"), None),
            analysis(Some("opt-out"), Some("false")),
        ];
        for row in ENDED_REASONS.iter().chain([&UNKNOWN]) {
            for analysis in &analyses {
                let result = map_end_of_call(row.vapi.text(), analysis);
                assert!(
                    call_outcomes.contains(result.engine_outcome),
                    "{}: {}",
                    row.vapi.text(),
                    result.engine_outcome
                );
                let sim: EncounterOutcome = result.engine_outcome.parse().unwrap();
                assert_eq!(sim.as_str(), result.engine_outcome);
                // As in the simulator: a failure reason only on an unresolved call, and then it
                // is the engine outcome.
                match result.failure_reason {
                    Some(reason) => {
                        assert_eq!(result.outcome, O::Unresolved);
                        assert_eq!(result.engine_outcome, failure_reason_str(reason));
                    }
                    None => assert_eq!(result.engine_outcome, result.outcome.as_str()),
                }
                assert!(!matches!(result.ended_reason, E::Other(_)));
                assert!(!matches!(result.outcome, O::Other(_)));
            }
        }
    }

    #[test]
    fn templated_families_are_failures() {
        for reason in [
            "pipeline-error-openai-llm-failed",
            "pipeline-error-eleven-labs-voice-failed",
            "pipeline-error-deepgram-transcriber-failed",
            "call.in-progress.error-vapifault-openai-429-exceeded-quota",
            "call.in-progress.error-vapifault-anthropic-500-server-error",
            "call.in-progress.error-providerfault-openai-503-server-overloaded-error",
            "call.in-progress.error-providerfault-cartesia-401-unauthorized",
        ] {
            let result = map_end_of_call(reason, &analysis(Some("resolved"), Some("true")));
            assert_eq!(result.ended_reason, E::Failed, "{reason}");
            assert_eq!(result.outcome, O::Failed, "{reason}");
            assert_eq!(result.engine_outcome, "failed", "{reason}");
            assert!(lookup(reason).vapi.text().len() > 1, "{reason}");
        }
    }

    #[test]
    fn exact_rows_win_over_family_prefixes() {
        // Both start with the providerfault prefix; the exact rows say otherwise.
        let timeout = "call.in-progress.error-providerfault-outbound-sip-408-request-timeout";
        assert_eq!(
            map_end_of_call(timeout, &VapiAnalysis::default()).outcome,
            O::NoAnswer
        );
        assert_eq!(
            lookup("call.in-progress.error-vapifault-worker-died").vapi,
            ReasonMatch::Exact("call.in-progress.error-vapifault-worker-died")
        );
    }

    #[test]
    fn unknown_values_are_failures() {
        for reason in [
            "",
            "assistant-error",
            "something-vapi-adds-next-month",
            "pipeline-no-available-llm-model",
            "call.in-progress.error-vapifault-chat-pipeline-failed-to-start",
        ] {
            let result = map_end_of_call(reason, &analysis(Some("resolved"), Some("true")));
            assert_eq!(result.ended_reason, E::Failed, "{reason}");
            assert_eq!(result.outcome, O::Failed, "{reason}");
            assert_eq!(result.failure_reason, None, "{reason}");
            assert_eq!(result.engine_outcome, "failed", "{reason}");
            assert!(!result.connected);
        }
        assert_eq!(lookup("brand-new").group, "unknown");
    }

    #[test]
    fn structured_outcome_wins_for_connected_calls() {
        let cases = [
            ("resolved", O::Resolved, None, "resolved"),
            ("unresolved", O::Unresolved, None, "unresolved"),
            ("declined", O::Unresolved, Some(F::Declined), "declined"),
            ("escalated", O::Unresolved, Some(F::Escalated), "escalated"),
            (
                "requested-callback",
                O::Unresolved,
                Some(F::RequestedCallback),
                "requested-callback",
            ),
            (
                "Requested_Callback",
                O::Unresolved,
                Some(F::RequestedCallback),
                "requested-callback",
            ),
            (
                "customer dropped",
                O::Unresolved,
                Some(F::CustomerDropped),
                "customer-dropped",
            ),
            (
                "assistant-ended",
                O::Unresolved,
                Some(F::AssistantEnded),
                "assistant-ended",
            ),
            (" OPT-OUT ", O::Unresolved, Some(F::OptOut), "opt-out"),
        ];
        assert_eq!(cases.len(), STRUCTURED_OUTCOMES.len() + 1);
        for (text, outcome, failure, engine) in cases {
            // successEvaluation says true, but the structured outcome wins.
            let result =
                map_end_of_call("customer-ended-call", &analysis(Some(text), Some("true")));
            assert_eq!(result.outcome, outcome, "{text}");
            assert_eq!(result.failure_reason, failure, "{text}");
            assert_eq!(result.engine_outcome, engine, "{text}");
            assert_eq!(result.decided_by, DecidedBy::StructuredData, "{text}");
            assert_eq!(result.ended_reason, E::CustomerEnded);
        }
    }

    #[test]
    fn success_evaluation_decides_when_there_is_no_structured_outcome() {
        let resolved = map_end_of_call("assistant-ended-call", &analysis(None, Some("true")));
        assert_eq!(resolved.outcome, O::Resolved);
        assert_eq!(resolved.engine_outcome, "resolved");
        assert_eq!(resolved.decided_by, DecidedBy::SuccessEvaluation);
        assert_eq!(resolved.ended_reason, E::AssistantEnded);
        for other in ["false", "8", "PASS", ""] {
            let result = map_end_of_call("silence-timed-out", &analysis(None, Some(other)));
            assert_eq!(result.outcome, O::Unresolved, "{other}");
            assert_eq!(result.decided_by, DecidedBy::Default, "{other}");
            assert_eq!(result.ended_reason, E::SilenceTimedOut);
        }
        // An unknown structured outcome is ignored, not trusted.
        let unknown = map_end_of_call(
            "exceeded-max-duration",
            &analysis(Some("maybe"), Some("TRUE")),
        );
        assert_eq!(unknown.outcome, O::Resolved);
        assert_eq!(unknown.decided_by, DecidedBy::SuccessEvaluation);
        // A non-string outcome too.
        let mut data = Map::new();
        data.insert("outcome".into(), json!(true));
        let odd = VapiAnalysis {
            structured_data: Some(data),
            ..VapiAnalysis::default()
        };
        assert_eq!(
            map_end_of_call("customer-ended-call", &odd).outcome,
            O::Unresolved
        );
    }

    #[test]
    fn fixed_rows_ignore_the_analysis() {
        let result = map_end_of_call("voicemail", &analysis(Some("resolved"), Some("true")));
        assert_eq!(result.outcome, O::Voicemail);
        assert_eq!(result.engine_outcome, "voicemail");
        let result = map_end_of_call(
            "assistant-forwarded-call",
            &analysis(Some("resolved"), None),
        );
        assert_eq!(result.failure_reason, Some(F::Escalated));
        assert_eq!(result.engine_outcome, "escalated");
    }

    #[test]
    fn the_reference_report_maps_to_resolved() {
        let message = super::super::wire::parse_server_message(
            super::super::wire::tests::END_OF_CALL.as_bytes(),
        )
        .unwrap();
        let super::super::wire::ServerMessage::EndOfCallReport(report) = message else {
            panic!("not a report");
        };
        let result = map_end_of_call(&report.ended_reason, &report.analysis);
        assert_eq!(result.ended_reason, E::CustomerEnded);
        assert_eq!(result.outcome, O::Resolved);
        assert_eq!(result.engine_outcome, "resolved");
    }

    #[test]
    fn call_statuses_map_and_drop_the_ones_the_report_lacks() {
        assert_eq!(call_status("queued"), Some(CallStatus::Queued));
        assert_eq!(call_status("ringing"), Some(CallStatus::Ringing));
        assert_eq!(call_status("in-progress"), Some(CallStatus::InProgress));
        assert_eq!(call_status("forwarding"), Some(CallStatus::Forwarding));
        assert_eq!(call_status("ended"), Some(CallStatus::Ended));
        for none in ["scheduled", "not-found", "deletion-failed", "answered", ""] {
            assert_eq!(call_status(none), None, "{none}");
        }
    }

    #[test]
    fn the_readme_shows_the_current_table() {
        // Regenerate with `cargo run -p clarion-providers --example mapping_table`.
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's mapping table is stale"
        );
    }

    #[test]
    fn the_markdown_table_has_one_line_per_row() {
        let table = markdown_table();
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 2 + ENDED_REASONS.len() + 1);
        for (line, row) in lines[2..].iter().zip(ENDED_REASONS) {
            assert!(line.contains(row.vapi.text()), "{line}");
            assert!(line.contains(row.ended_reason.as_str()), "{line}");
            assert_eq!(line.matches('|').count(), 7, "{line}");
        }
        assert!(table.contains(
            "| `voicemail` | timeouts and other | `voicemail` | `voicemail` | — | `voicemail` |"
        ));
        assert!(
            table.contains(
                "| `customer-ended-call` | customer | `customer-ended` | from analysis |"
            )
        );
        assert!(table.contains("| `pipeline-error-…` |"));
        assert!(
            table.ends_with("| any other value | unknown | `failed` | `failed` | — | `failed` |\n")
        );
    }
}
