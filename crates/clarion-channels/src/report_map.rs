//! How an encounter outcome reads in the End of Sequence Report: the one table between the
//! engine's [`EncounterOutcome`] and the report's enums, for every channel provider (the
//! simulator here; Vapi's and Twilio's mappings in `clarion-providers` go through it too).
//!
//! A call's outcome is two report fields: `outcome` and, for a call that reached the contact
//! without achieving its purpose, `failure_reason`. The engine's vocabulary names the failure
//! reason itself (`declined`, `opt-out`, ...), so the two directions below are inverse:
//! [`call_outcome_of`] then [`encounter_outcome_of_call`] gives the outcome back for every
//! call outcome. A conversation's outcome is its `ended_reason` ([`sms_ended_reason_of`]).

use clarion_webhooks::{CallOutcome, FailureReason, SmsEndedReason};

use crate::outcome::EncounterOutcome;

/// The report's call `outcome` and `failure_reason` for an encounter outcome. The SMS-only
/// outcomes (`no-reply`, `error`) never end a call; they read as a plain `unresolved`.
pub fn call_outcome_of(outcome: EncounterOutcome) -> (CallOutcome, Option<FailureReason>) {
    let unresolved = |reason| (CallOutcome::Unresolved, Some(reason));
    match outcome {
        EncounterOutcome::Resolved => (CallOutcome::Resolved, None),
        EncounterOutcome::Voicemail => (CallOutcome::Voicemail, None),
        EncounterOutcome::NoAnswer => (CallOutcome::NoAnswer, None),
        EncounterOutcome::Busy => (CallOutcome::Busy, None),
        EncounterOutcome::Failed => (CallOutcome::Failed, None),
        EncounterOutcome::Declined => unresolved(FailureReason::Declined),
        EncounterOutcome::Escalated => unresolved(FailureReason::Escalated),
        EncounterOutcome::RequestedCallback => unresolved(FailureReason::RequestedCallback),
        EncounterOutcome::CustomerDropped => unresolved(FailureReason::CustomerDropped),
        EncounterOutcome::AssistantEnded => unresolved(FailureReason::AssistantEnded),
        EncounterOutcome::OptOut => unresolved(FailureReason::OptOut),
        EncounterOutcome::Unresolved | EncounterOutcome::NoReply | EncounterOutcome::Error => {
            (CallOutcome::Unresolved, None)
        }
    }
}

/// The encounter outcome a failure reason stands for.
pub fn encounter_outcome_of_failure(reason: FailureReason) -> EncounterOutcome {
    match reason {
        FailureReason::Declined => EncounterOutcome::Declined,
        FailureReason::Escalated => EncounterOutcome::Escalated,
        FailureReason::RequestedCallback => EncounterOutcome::RequestedCallback,
        FailureReason::CustomerDropped => EncounterOutcome::CustomerDropped,
        FailureReason::AssistantEnded => EncounterOutcome::AssistantEnded,
        FailureReason::OptOut => EncounterOutcome::OptOut,
    }
}

/// The encounter outcome of a call as the report states it: the failure reason when there is
/// one, else the outcome (`failed` for `failed` and for any value a later report type might
/// add).
pub fn encounter_outcome_of_call(
    outcome: &CallOutcome,
    failure_reason: Option<FailureReason>,
) -> EncounterOutcome {
    if let Some(reason) = failure_reason {
        return encounter_outcome_of_failure(reason);
    }
    match outcome {
        CallOutcome::Resolved => EncounterOutcome::Resolved,
        CallOutcome::Unresolved => EncounterOutcome::Unresolved,
        CallOutcome::Voicemail => EncounterOutcome::Voicemail,
        CallOutcome::NoAnswer => EncounterOutcome::NoAnswer,
        CallOutcome::Busy => EncounterOutcome::Busy,
        _ => EncounterOutcome::Failed,
    }
}

/// The report's SMS `ended_reason` for an encounter outcome. `escalated` (a Twilio
/// conversation handed to a person) has no reason of its own in the report: `unknown`;
/// `unresolved` (a Twilio conversation's turn limit) and `no-reply` are a time-out.
pub fn sms_ended_reason_of(outcome: EncounterOutcome) -> SmsEndedReason {
    match outcome {
        EncounterOutcome::Resolved => SmsEndedReason::Resolved,
        EncounterOutcome::Declined => SmsEndedReason::ContactDeclined,
        EncounterOutcome::OptOut => SmsEndedReason::ContactOptOut,
        EncounterOutcome::Error => SmsEndedReason::SystemError,
        EncounterOutcome::Escalated => SmsEndedReason::Unknown,
        _ => SmsEndedReason::ConversationTimeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_outcome_reads_back_as_itself() {
        for outcome in EncounterOutcome::CALL {
            let (reported, reason) = call_outcome_of(outcome);
            assert_eq!(encounter_outcome_of_call(&reported, reason), outcome);
        }
    }
}
