//! Encounters: one call or SMS conversation of a sequence.

use std::str::FromStr;

use clarion_engine::Channel;

use crate::{AssistantId, CallerNumberId, EncounterId, Millis, OrgId, SequenceId, StoreError};

/// Where an encounter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncounterStatus {
    /// Committed; the channel has not confirmed the request (a provider encounter may be
    /// claimed, see [`EncounterRow::claimed_at`]).
    Created,
    /// The channel took the request: a call placed, a conversation started.
    Requested,
    /// Over, with its outcome.
    Ended,
}

impl EncounterStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Requested => "requested",
            Self::Ended => "ended",
        }
    }
}

impl FromStr for EncounterStatus {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        match text {
            "created" => Ok(Self::Created),
            "requested" => Ok(Self::Requested),
            "ended" => Ok(Self::Ended),
            _ => Err(StoreError::Corrupt("unknown encounter status")),
        }
    }
}

/// An encounter row. `Debug` leaves out the number, the report (transcript, summary) and
/// the conversation, which are PHI.
#[derive(Clone, PartialEq)]
pub struct EncounterRow {
    pub id: EncounterId,
    pub org_id: OrgId,
    pub sequence_id: SequenceId,
    pub step: i64,
    pub attempt: i64,
    pub channel: Channel,
    pub assistant_id: AssistantId,
    pub phone_number: String,
    pub status: EncounterStatus,
    pub provider_ref: Option<String>,
    /// The provider's latest status while the encounter runs (a call's `ringing`, …).
    pub provider_status: Option<String>,
    pub outcome: Option<String>,
    /// The encounter's Call or Sms object of the report, as stored JSON text.
    pub report: Option<String>,
    pub ends_at: Option<Millis>,
    pub created_at: Millis,
    pub ended_at: Option<Millis>,
    /// A provider SMS conversation's state (JSON), while it runs.
    pub conversation: Option<String>,
    /// When the encounter was claimed for its provider request (the last check before
    /// contact); `None` while unclaimed, and for simulated encounters.
    pub claimed_at: Option<Millis>,
    /// An SMS conversation's sender (our number, or the Messaging Service sid), set when it
    /// is claimed; `None` for calls, simulated texts and rows older than the column.
    pub sender: Option<String>,
    /// The caller number chosen at its claim (`/v1/caller-numbers`): its id, the number (the
    /// report's `source_number`) and the provider's id for it (a Vapi phoneNumberId). `None`
    /// when the organisation has no caller number for the channel (the configured one is
    /// used), and until the claim.
    pub caller_number: Option<ChosenCallerNumber>,
}

impl std::fmt::Debug for EncounterRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncounterRow")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("sequence_id", &self.sequence_id)
            .field("step", &self.step)
            .field("attempt", &self.attempt)
            .field("channel", &self.channel)
            .field("status", &self.status)
            .field("provider_ref", &self.provider_ref)
            .field("outcome", &self.outcome)
            .field("ends_at", &self.ends_at)
            .field("created_at", &self.created_at)
            .field("ended_at", &self.ended_at)
            .field("claimed_at", &self.claimed_at)
            .finish_non_exhaustive()
    }
}

/// The caller number an encounter goes out from, as recorded on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenCallerNumber {
    pub id: CallerNumberId,
    /// E.164.
    pub number: String,
    /// The provider's id for the number (a Vapi phoneNumberId); `None` for a Twilio From.
    pub provider_id: Option<String>,
}

/// What the channel answered for an encounter's request. `Debug` leaves out the report,
/// which is PHI.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestedEncounter {
    pub id: EncounterId,
    /// The provider's id for it (a Vapi call id, a Twilio message sid, a simulated id).
    pub provider_ref: String,
    /// When it is known to end (a simulated encounter), or when to look at it again.
    pub ends_at: Option<Millis>,
    /// The report object, when already known (a simulated encounter).
    pub report: Option<String>,
    /// The outcome, when already known (a simulated encounter).
    pub outcome: Option<String>,
}

impl std::fmt::Debug for RequestedEncounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestedEncounter")
            .field("id", &self.id)
            .field("provider_ref", &self.provider_ref)
            .field("ends_at", &self.ends_at)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// An encounter [`Store::insert_encounters`](crate::Store::insert_encounters) inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertedEncounter {
    pub id: EncounterId,
    /// How many encounters of the sequence come before it (this batch's included).
    pub ordinal: i64,
}

/// An encounter to end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncounterEnd<'a> {
    pub id: EncounterId,
    /// The engine's outcome, kebab-case.
    pub outcome: &'a str,
    /// The report object; `None` keeps the one stored when it was requested.
    pub report: Option<&'a serde_json::Value>,
    pub ended_at: Millis,
}

/// An encounter waiting in a provider's queue (committed, not yet claimed), as the capacity
/// governor chooses among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedEncounter {
    pub id: EncounterId,
    pub org_id: OrgId,
    /// Its place in its organisation's queue: 0 for the organisation's earliest-due one.
    pub rank_in_org: u32,
}

/// An encounter that has just started waiting for provider capacity (to record once in its
/// sequence's history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityWait {
    pub id: EncounterId,
    pub sequence_id: SequenceId,
    pub step: i64,
    pub attempt: i64,
    pub channel: Channel,
}

/// One provider channel's load, read from the database: who holds its slots, and how many
/// encounters wait for capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderLoad {
    /// Encounters claimed for their request and not ended, per organisation (only
    /// organisations holding at least one).
    pub in_use_by_org: Vec<(OrgId, u64)>,
    /// Encounters in the queue that have been recorded as waiting for capacity.
    pub waiting: u64,
}

impl ProviderLoad {
    /// Slots in use, all organisations together.
    pub fn in_use(&self) -> u64 {
        self.in_use_by_org.iter().map(|(_, n)| n).sum()
    }
}
