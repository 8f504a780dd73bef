//! What the operator dashboard stores and asks for: sequence filters, sign-in sessions and the
//! PHI access log.

use crate::{ApiKeyId, Millis, OrgId, SequenceId, SequenceStatus, TemplateId};

/// Which of an organisation's sequences a list shows. Every field narrows; the default is all
/// of them, oldest first (the API's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceFilter {
    pub status: Option<SequenceStatus>,
    pub template_id: Option<TemplateId>,
    /// Enrolled at or after this instant.
    pub created_from: Option<Millis>,
    /// Enrolled before this instant.
    pub created_before: Option<Millis>,
    /// The contact's number, exactly (E.164).
    pub phone_number: Option<String>,
    /// The contact's external id, exactly.
    pub external_id: Option<String>,
    /// Newest first: the cursor then continues below the last id instead of above it.
    pub newest_first: bool,
}

/// A dashboard session to start: the token itself never reaches the store, only its SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct NewUiSession<'a> {
    pub org_id: OrgId,
    /// The API key that signed in (the session ends when the key is revoked).
    pub api_key_id: ApiKeyId,
    pub token_hash: &'a [u8; 32],
    pub now: Millis,
    pub expires_at: Millis,
}

/// A live dashboard session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiSession {
    pub id: i64,
    pub org_id: OrgId,
    pub api_key_id: ApiKeyId,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
}

/// How a session is found and kept alive by one request.
#[derive(Debug, Clone, Copy)]
pub struct SessionTouch<'a> {
    pub token_hash: &'a [u8; 32],
    pub now: Millis,
    /// The new idle expiry, when the session is still live.
    pub expires_at: Millis,
    /// Sessions created before this instant are over, however active (absolute lifetime).
    pub created_after: Millis,
}

/// One access to PHI to record.
#[derive(Debug, Clone, Copy)]
pub struct NewAccessEntry<'a> {
    pub org_id: OrgId,
    pub at: Millis,
    /// Who: `ui-session:<id> api-key:<id>` or `api-key:<id>` (public ids).
    pub actor: &'a str,
    /// What kind of access: `sequence.viewed`, `sequences.exported`, `encounters.exported`.
    pub action: &'a str,
    pub sequence_id: Option<SequenceId>,
    /// What was accessed, without PHI (the filters of an export, a count).
    pub detail: &'a str,
}

/// One recorded access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub id: i64,
    pub org_id: OrgId,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub sequence_id: Option<SequenceId>,
    pub detail: String,
}

/// The call outcomes that mean nobody answered (or the call never connected): every other
/// ended call reached the contact. The answer rate sets the answered against the first three;
/// `failed` is counted apart (the call was not placed or broke down).
pub const UNANSWERED_CALL_OUTCOMES: [&str; 4] = ["voicemail", "no-answer", "busy", "failed"];

/// The width of the slots answered calls are counted in for the overview's heat map: every
/// time zone's offset from UTC is a multiple of 15 minutes (and so is every daylight-saving
/// change), so a slot lies wholly in one local hour of any zone.
pub const HEAT_MAP_SLOT_MILLIS: Millis = 15 * 60 * 1000;

/// What the dashboard's overview asks for: one organisation, one window `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverviewQuery {
    pub org_id: OrgId,
    pub since: Millis,
    pub until: Millis,
    /// The most (zone, slot) rows of answered calls to read (the answer says when there
    /// were more).
    pub max_slots: u32,
}

/// The overview's aggregates, every one of them bounded by the organisation and the window
/// (and none carrying a patient's data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// Sequences running now (whenever they were enrolled).
    pub active: u64,
    /// Sequences paused now.
    pub paused: u64,
    /// Sequences that ended in the window.
    pub ended: u64,
    /// Encounters that ended in the window, per UTC day, channel and outcome, in that order.
    pub outcomes: Vec<OutcomeCount>,
    /// Answered calls that ended in the window, per contact time zone and
    /// [`HEAT_MAP_SLOT_MILLIS`] slot of their start, in (zone, slot) order.
    pub answered_slots: Vec<AnsweredSlot>,
    /// Whether there were more (zone, slot) rows than `max_slots` (the heat map is then
    /// partial).
    pub answered_slots_truncated: bool,
    /// Webhook delivery attempts in the window, per UTC day (days without attempts left out).
    pub deliveries: Vec<DeliveryDay>,
}

/// Encounters of one channel that ended on one UTC day with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutcomeCount {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub channel: crate::Channel,
    pub outcome: String,
    pub count: u64,
}

/// Answered calls of contacts in one time zone that started in one slot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AnsweredSlot {
    /// The zone stored with the sequence's contact (IANA name as enrolled), empty if none.
    pub time_zone: String,
    /// The slot's start (a multiple of [`HEAT_MAP_SLOT_MILLIS`]).
    pub slot_start: Millis,
    pub count: u64,
}

/// One UTC day's webhook delivery attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryDay {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub attempts: u64,
    /// Attempts answered with a 2xx.
    pub succeeded: u64,
    /// Nearest-rank percentiles of the attempts' durations.
    pub p50_ms: u64,
    pub p99_ms: u64,
}

/// One day in milliseconds.
pub const MILLIS_PER_DAY: Millis = 86_400_000;
