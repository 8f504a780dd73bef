//! How an encounter ended, and which endings stop a sequence.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::plan::ParseError;

/// A reason a template may list in `stop_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The encounter achieved its goal.
    Resolved,
    /// The contact asked not to be contacted again. Always stops, listed or not.
    OptOut,
    /// The contact declined.
    Declined,
    /// The encounter was handed to staff.
    Escalated,
}

/// What the channel reports when an encounter ends: Clarion's one outcome vocabulary, used by
/// the engine, by every provider's mapping and by the simulator (whose scripted
/// `simulation.outcomes` are these names). One enum for both channels because the wire names
/// overlap (`resolved`, `declined`, `opt-out`); which ones a channel produces is listed on
/// each variant ([`EncounterOutcome::CALL`], [`EncounterOutcome::SMS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncounterOutcome {
    /// Call and SMS: the goal was met.
    Resolved,
    /// Call: the contact was reached but the goal was not met.
    Unresolved,
    /// Call: went to voicemail (retryable).
    Voicemail,
    /// Call: nobody answered (retryable).
    NoAnswer,
    /// Call: the line was busy (retryable).
    Busy,
    /// Call: the call could not be placed or broke down.
    Failed,
    /// Call and SMS: the contact declined.
    Declined,
    /// Call: handed to staff.
    Escalated,
    /// Call: the contact asked to be called back later.
    RequestedCallback,
    /// Call: the contact hung up.
    CustomerDropped,
    /// Call: the assistant ended the call.
    AssistantEnded,
    /// Call and SMS: the contact opted out (STOP or a spoken equivalent).
    OptOut,
    /// SMS: no reply within the template's `sms_timeout`.
    NoReply,
    /// SMS: the conversation failed for a system reason.
    Error,
}

impl EncounterOutcome {
    /// Every outcome, in the order the API documents them (calls, then SMS-only ones).
    pub const ALL: [EncounterOutcome; 14] = [
        Self::Resolved,
        Self::Unresolved,
        Self::Voicemail,
        Self::NoAnswer,
        Self::Busy,
        Self::Failed,
        Self::Declined,
        Self::Escalated,
        Self::RequestedCallback,
        Self::CustomerDropped,
        Self::AssistantEnded,
        Self::OptOut,
        Self::NoReply,
        Self::Error,
    ];

    /// The outcomes a call can end with (also what the simulator and `simulation.outcomes`
    /// allow on calls).
    pub const CALL: [EncounterOutcome; 12] = [
        Self::Resolved,
        Self::Unresolved,
        Self::Voicemail,
        Self::NoAnswer,
        Self::Busy,
        Self::Failed,
        Self::Declined,
        Self::Escalated,
        Self::RequestedCallback,
        Self::CustomerDropped,
        Self::AssistantEnded,
        Self::OptOut,
    ];

    /// The outcomes an SMS conversation ends with: the simulator's and `simulation.outcomes`'
    /// list. A Twilio conversation can also end `escalated` (the contact asked for a person)
    /// or `unresolved` (its turn limit).
    pub const SMS: [EncounterOutcome; 5] = [
        Self::Resolved,
        Self::NoReply,
        Self::Declined,
        Self::OptOut,
        Self::Error,
    ];

    /// Whether a call that ended this way may be tried again: the contact was not reached, so
    /// trying later can help. Anything else either reached the contact or will fail again.
    pub fn is_retryable_call(self) -> bool {
        matches!(self, Self::NoAnswer | Self::Busy | Self::Voicemail)
    }

    /// The `stop_on` reason this outcome matches, if any.
    pub fn stop_reason(self) -> Option<StopReason> {
        match self {
            Self::Resolved => Some(StopReason::Resolved),
            Self::Declined => Some(StopReason::Declined),
            Self::Escalated => Some(StopReason::Escalated),
            Self::OptOut => Some(StopReason::OptOut),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::Unresolved => "unresolved",
            Self::Voicemail => "voicemail",
            Self::NoAnswer => "no-answer",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::Declined => "declined",
            Self::Escalated => "escalated",
            Self::RequestedCallback => "requested-callback",
            Self::CustomerDropped => "customer-dropped",
            Self::AssistantEnded => "assistant-ended",
            Self::OptOut => "opt-out",
            Self::NoReply => "no-reply",
            Self::Error => "error",
        }
    }

    /// A short phrase for outcome descriptions ("ended: no answer"). Never contains PHI: it is
    /// built from the outcome alone.
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::Unresolved => "not resolved",
            Self::Voicemail => "reached voicemail",
            Self::NoAnswer => "no answer",
            Self::Busy => "line busy",
            Self::Failed => "the call failed",
            Self::Declined => "the contact declined",
            Self::Escalated => "escalated to staff",
            Self::RequestedCallback => "the contact asked to be called back",
            Self::CustomerDropped => "the contact hung up",
            Self::AssistantEnded => "the assistant ended the call",
            Self::OptOut => "the contact opted out",
            Self::NoReply => "no reply",
            Self::Error => "a messaging error",
        }
    }
}

impl fmt::Display for EncounterOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EncounterOutcome {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|o| o.as_str()).collect();
                ParseError::new("outcome", text, &names)
            })
    }
}
