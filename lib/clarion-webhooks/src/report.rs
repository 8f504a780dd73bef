//! The End of Sequence Report and the objects inside it.
//!
//! Field names, nesting and value sets follow the specification of the payload exactly. Every
//! documented key is serialised, as `null` where the value is unknown; on input, optional keys
//! may be absent and unknown keys are ignored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::open_enum::open_enum;
use crate::timestamp::Timestamp;

/// The End of Sequence Report: what happened during one outreach sequence, sent when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SequenceReport {
    /// The unique identifier for the sequence.
    pub id: i64,
    /// The status of the sequence (e.g., `ended`).
    pub status: SequenceStatus,
    /// Optional human-readable description of the sequence outcome (e.g., from conversation
    /// evaluation). May be null.
    pub outcome_description: Option<String>,
    /// ISO 8601 timestamp when the sequence was last updated.
    pub last_updated: Timestamp,
    /// Array of outreach steps performed during the sequence.
    pub outreach: Vec<OutreachStep>,
}

open_enum! {
    /// The status of a sequence. Reports are sent for ended sequences; the API uses the same
    /// shape for sequences that are still active or paused.
    pub enum SequenceStatus {
        /// The sequence is running.
        Active = "active",
        /// The sequence is paused and runs no step until resumed.
        Paused = "paused",
        /// The sequence has ended; its report has been queued for delivery.
        Ended = "ended",
    }
}

/// One step performed during the sequence: a call or an SMS conversation.
///
/// Exactly one of `call` and `sms` is set, matching `type`; the other is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OutreachStep {
    /// The type of outreach: `call | sms`.
    #[serde(rename = "type")]
    pub kind: OutreachType,
    /// The step number in the sequence.
    pub step: u32,
    /// The call details for this outreach step.
    pub call: Option<Call>,
    /// The sms details for this outreach step.
    pub sms: Option<Sms>,
}

impl OutreachStep {
    /// A call step.
    pub fn call(step: u32, call: Call) -> Self {
        Self {
            kind: OutreachType::Call,
            step,
            call: Some(call),
            sms: None,
        }
    }

    /// An SMS step.
    pub fn sms(step: u32, sms: Sms) -> Self {
        Self {
            kind: OutreachType::Sms,
            step,
            call: None,
            sms: Some(sms),
        }
    }
}

/// The type of an outreach step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum OutreachType {
    /// An AI phone call.
    Call,
    /// An AI SMS conversation.
    Sms,
}

/// One AI phone call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Call {
    /// The unique identifier for the call.
    pub id: i64,
    /// The ID of the assistant that handled the call.
    pub assistant_id: i64,
    /// ISO 8601 timestamp when the call started.
    pub started_at: Option<Timestamp>,
    /// ISO 8601 timestamp when the call ended.
    pub ended_at: Option<Timestamp>,
    /// The status of the call.
    pub call_status: CallStatus,
    /// The duration of the call in milliseconds.
    pub duration_ms: Option<u64>,
    /// The reason why the call ended (e.g., `customer-ended`, `assistant-ended`).
    pub ended_reason: Option<CallEndedReason>,
    /// Full conversation transcript with speaker labels (`AI:` and `User:`).
    pub transcript: Option<String>,
    /// The phone number that initiated the call (E.164 format).
    pub source_number: Option<String>,
    /// The phone number that received the call (E.164 format).
    pub destination_number: Option<String>,
    /// The type of call (e.g., `outboundPhoneCall`, `inboundPhoneCall`).
    pub call_type: Option<CallType>,
    /// Call analysis metrics and custom data extractions.
    pub analysis: Option<CallAnalysis>,
    /// AI-generated summary of the call.
    pub summary: Option<String>,
    /// The outcome of the call (e.g., `resolved`, `unresolved`, `voicemail`).
    pub outcome: Option<CallOutcome>,
    /// If the call was unsuccessful, this indicates the reason.
    pub failure_reason: Option<FailureReason>,
    /// Content of voicemail message if one was left.
    pub voicemail_message: Option<String>,
}

/// The status of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    /// Accepted by the provider, not yet dialling.
    Queued,
    /// The contact's phone is ringing.
    Ringing,
    /// The call is connected.
    InProgress,
    /// The call is being forwarded.
    Forwarding,
    /// The call is over.
    Ended,
}

open_enum! {
    /// Why a call ended.
    pub enum CallEndedReason {
        /// The contact hung up.
        CustomerEnded = "customer-ended",
        /// The assistant ended the call.
        AssistantEnded = "assistant-ended",
        /// The assistant forwarded the call to a person.
        AssistantForwarded = "assistant-forwarded",
        /// The call reached voicemail.
        Voicemail = "voicemail",
        /// The contact did not answer.
        CustomerDidNotAnswer = "customer-did-not-answer",
        /// The contact's line was busy.
        CustomerBusy = "customer-busy",
        /// Nobody spoke for too long.
        SilenceTimedOut = "silence-timed-out",
        /// The call reached its maximum duration.
        ExceededMaxDuration = "exceeded-max-duration",
        /// The call could not be connected or failed in the provider.
        Failed = "failed",
    }
}

open_enum! {
    /// The kind of call.
    pub enum CallType {
        /// A call placed to the contact.
        OutboundPhoneCall = "outboundPhoneCall",
        /// A call placed by the contact.
        InboundPhoneCall = "inboundPhoneCall",
    }
}

open_enum! {
    /// What a call achieved.
    pub enum CallOutcome {
        /// The purpose of the call was achieved.
        Resolved = "resolved",
        /// The contact was reached but the purpose was not achieved; see `failure_reason`.
        Unresolved = "unresolved",
        /// The call reached voicemail.
        Voicemail = "voicemail",
        /// Nobody answered.
        NoAnswer = "no-answer",
        /// The line was busy.
        Busy = "busy",
        /// The call could not be placed or connected.
        Failed = "failed",
    }
}

/// Why a call that reached the contact was unsuccessful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    /// The contact declined.
    Declined,
    /// The call was escalated to a person.
    Escalated,
    /// The contact asked to be called back later.
    RequestedCallback,
    /// The contact dropped off the call.
    CustomerDropped,
    /// The assistant ended the call before the purpose was achieved.
    AssistantEnded,
    /// The contact asked not to be contacted again.
    OptOut,
}

/// Call analysis metrics and custom data extractions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CallAnalysis {
    /// Number of times the assistant had to repeat information.
    pub repetition_count: Option<u32>,
    /// Number of times the conversation was interrupted.
    pub interruption_count: Option<u32>,
    /// Custom analysis fields configured for your assistant.
    pub custom: Option<Map<String, Value>>,
}

/// One AI SMS conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Sms {
    /// The unique identifier for the SMS encounter.
    pub id: i64,
    /// The ID of the assistant that handled this SMS encounter.
    pub assistant_id: i64,
    /// ISO 8601 timestamp when the SMS encounter started.
    pub started_at: Option<Timestamp>,
    /// ISO 8601 timestamp when the SMS encounter ended.
    pub ended_at: Option<Timestamp>,
    /// The status of the SMS encounter.
    pub status: SmsStatus,
    /// The reason why the encounter ended.
    pub ended_reason: Option<SmsEndedReason>,
    /// Full conversation transcript with speaker labels (`AI:` and `User:`).
    pub transcript: Option<String>,
    /// The phone number that initiated the SMS encounter (E.164 format).
    pub source_number: Option<String>,
    /// The phone number that was the recipient of the SMS encounter (E.164 format).
    pub destination_number: Option<String>,
    /// SMS encounter custom data extractions.
    pub analysis: Option<SmsAnalysis>,
    /// AI-generated summary of the conversation.
    pub summary: Option<String>,
}

/// The status of an SMS encounter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SmsStatus {
    /// The conversation is going on.
    Active,
    /// The conversation is paused.
    Paused,
    /// The conversation is over.
    Ended,
}

/// Why an SMS encounter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SmsEndedReason {
    /// The contact stopped replying before the conversation reached an end.
    ConversationTimeout,
    /// The purpose of the conversation was achieved.
    Resolved,
    /// The contact declined.
    ContactDeclined,
    /// The contact opted out (STOP or a synonym).
    ContactOptOut,
    /// The conversation could not go on because of an error.
    SystemError,
    /// The reason is not known.
    Unknown,
}

/// SMS encounter custom data extractions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SmsAnalysis {
    /// Custom analysis fields configured for your assistant.
    pub custom: Option<Map<String, Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_enums_keep_values_they_do_not_know() {
        let reason: CallEndedReason =
            serde_json::from_str("\"pipeline-error-llm-failed\"").unwrap();
        assert_eq!(
            reason,
            CallEndedReason::Other("pipeline-error-llm-failed".into())
        );
        assert_eq!(
            serde_json::to_string(&reason).unwrap(),
            "\"pipeline-error-llm-failed\""
        );
        let known: CallEndedReason = serde_json::from_str("\"customer-ended\"").unwrap();
        assert_eq!(known, CallEndedReason::CustomerEnded);
    }

    #[test]
    fn closed_enums_use_the_documented_kebab_case_strings() {
        let text = |v: &dyn erased::Ser| v.json();
        assert_eq!(text(&CallStatus::InProgress), "\"in-progress\"");
        assert_eq!(
            text(&FailureReason::RequestedCallback),
            "\"requested-callback\""
        );
        assert_eq!(
            text(&FailureReason::CustomerDropped),
            "\"customer-dropped\""
        );
        assert_eq!(
            text(&SmsEndedReason::ConversationTimeout),
            "\"conversation-timeout\""
        );
        assert_eq!(text(&SmsEndedReason::ContactOptOut), "\"contact-opt-out\"");
        assert_eq!(text(&OutreachType::Sms), "\"sms\"");
        assert!(serde_json::from_str::<CallStatus>("\"answered\"").is_err());
    }

    mod erased {
        pub trait Ser {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
