//! The persisted state of one sequence, and what goes in and out of [`step`](crate::step).
//!
//! Step indexes in every type here are 0-based, like [`SequenceState::step`]; attempts are
//! 1-based. Only the human-readable descriptions say "step 1" for index 0.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::outcome::EncounterOutcome;
use crate::plan::Channel;

/// Whether the sequence is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SequenceStatus {
    /// Running: the scheduler wakes it at `next_wake`.
    Active,
    /// Paused through the API: never woken; an encounter already under way may still end.
    Paused,
    /// Finished for good; every later event is ignored.
    Ended,
}

/// Where the current step stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Phase {
    /// Created by [`SequenceState::new`]; waiting for [`Event::Enrolled`].
    New,
    /// The current step/attempt may start at `due_at`, if calling hours, contact caps and the
    /// suppression list allow it then. Deferrals move `next_wake`, never `due_at`, so the
    /// history keeps when the step was first due.
    WaitingToStart {
        /// When the step/attempt became (or becomes) due.
        due_at: DateTime<Utc>,
    },
    /// An encounter for (step, attempt) was started; waiting for [`Event::EncounterEnded`].
    InEncounter {
        /// When the engine asked for the encounter.
        started_at: DateTime<Utc>,
    },
    /// The sequence ended.
    Done,
}

/// Everything the engine remembers between events. The scheduler stores it as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceState {
    /// Active, paused or ended.
    pub status: SequenceStatus,
    /// 0-based index of the current step.
    pub step: usize,
    /// 1-based attempt of the current step.
    pub attempt: u32,
    /// Where the current step stands.
    pub phase: Phase,
    /// When the scheduler must deliver [`Event::Wake`]. `None` while waiting for an encounter
    /// to end, while paused, and once ended.
    pub next_wake: Option<DateTime<Utc>>,
    /// Set when the sequence ends; goes into the report.
    pub outcome_description: Option<String>,
    /// The outcome of the most recent encounter (a call's, not that of the text sent after
    /// its voicemail).
    pub last_outcome: Option<EncounterOutcome>,
    /// Whether the current (step, attempt) is the call step's text after its last voicemail
    /// ([`StepSpec::text_after_voicemail`](crate::StepSpec::text_after_voicemail)), an SMS
    /// encounter, rather than an attempt of the step itself. Absent from the stored state
    /// when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub voicemail_text: bool,
}

impl SequenceState {
    /// The state of a sequence that was just created; feed it [`Event::Enrolled`] next.
    pub fn new() -> Self {
        SequenceState {
            status: SequenceStatus::Active,
            step: 0,
            attempt: 1,
            phase: Phase::New,
            next_wake: None,
            outcome_description: None,
            last_outcome: None,
            voicemail_text: false,
        }
    }
}

impl Default for SequenceState {
    fn default() -> Self {
        Self::new()
    }
}

/// Something that happened to the sequence. The driver looks up any facts the engine needs
/// (suppression, contact caps) and passes them in, so the engine never does I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The sequence was created; always the first event.
    Enrolled,
    /// The scheduler woke the sequence (normally at `next_wake`, but any time is harmless).
    Wake {
        /// Whether the contact's number is on the organisation's suppression list now.
        suppressed: bool,
        /// With contact caps on, the earliest instant the contact may be contacted; `None`
        /// when allowed now or caps are off.
        contact_cap_allows_at: Option<DateTime<Utc>>,
        /// With a calling rule's attempt limit reached (e.g. three per 24 hours), the earliest
        /// instant it allows another contact and which rule (an index into `Plan::rules`);
        /// `None` when no rule limits attempts now.
        rule_cap: Option<RuleCap>,
    },
    /// The encounter the engine started has ended.
    EncounterEnded {
        /// What the channel reported.
        outcome: EncounterOutcome,
        /// When it ended (the provider's time, which may be earlier than `now` if the
        /// callback arrived late). Delays and retries count from here.
        ended_at: DateTime<Utc>,
    },
    /// `POST /v1/sequences/{id}/cancel`.
    Cancel,
    /// `POST /v1/sequences/{id}/pause`.
    Pause,
    /// `POST /v1/sequences/{id}/resume`.
    Resume,
    /// The encounter the engine started was not handed to its provider: the check made in
    /// the transaction just before the provider request ([`contact_check`](crate::contact_check))
    /// said no. Nobody was contacted; the driver removed the encounter row.
    EncounterWithheld {
        /// Why it was withheld.
        reason: Withheld,
    },
    /// The encounter the engine started was not handed to its provider because every one of
    /// the organisation's caller numbers for its channel has reached its daily cap (the driver
    /// chooses the number in the transaction just before the request). Nobody was contacted;
    /// the driver removed the encounter row. The attempt waits until `until`, when the first
    /// number frees up.
    CallerNumbersAtCap {
        /// When the earliest number may contact someone again.
        until: DateTime<Utc>,
    },
    /// The organisation's eligibility hook, asked just before the provider request of the
    /// encounter the engine started, answered that the patient is not to be contacted (or
    /// could not be asked, and the organisation treats that as "not eligible"). Nobody was
    /// contacted; the driver removed the encounter row.
    Ineligible {
        /// Skip the step or end the sequence.
        action: EligibilityAction,
        /// The hook's reason (or `hook-error: <class>`), kept only in the history.
        reason: Option<String>,
    },
}

/// What an "ineligible" answer does to the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EligibilityAction {
    /// This step is not run (nor its remaining attempts): the next step is scheduled after
    /// its delay, or the sequence ends if this was the last.
    SkipStep,
    /// The sequence ends now.
    EndSequence,
}

/// A calling rule's attempt limit, as looked up by the driver (see [`Event::Wake`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleCap {
    /// The earliest instant the rule allows another contact.
    pub allows_at: DateTime<Utc>,
    /// The rule, an index into `Plan::rules`.
    pub rule: usize,
}

/// Why an encounter the engine had started was not handed to its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Withheld {
    /// The sequence was paused, cancelled or had ended meanwhile.
    NotRunning,
    /// The number was put on the suppression list meanwhile.
    Suppressed,
    /// The contact's calling hours closed meanwhile.
    OutsideCallingHours,
}

/// Something the driver must do, in order, in the same transaction that stores the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Commit the encounter row for (step, attempt), then ask the provider. The pair is unique
    /// per sequence, which is what lets the driver keep contact at-most-once.
    StartEncounter {
        /// 0-based step index.
        step: usize,
        /// 1-based attempt.
        attempt: u32,
        /// Call or SMS.
        channel: Channel,
        /// The assistant to use.
        assistant_id: i64,
    },
    /// Append to the sequence's history (`GET /v1/sequences/{id}/events`).
    Record(Note),
    /// Put the contact's number on the organisation's suppression list (an opt-out).
    SuppressNumber,
    /// The sequence ended: build the report and enqueue it in the same transaction.
    /// `outcome_description` is set in the new state. Always the last action.
    End,
}

/// Why a due step did not start yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeferReason {
    /// Outside the contact's local calling hours.
    CallingHours,
    /// The organisation's contact cap does not allow contact yet.
    ContactCap,
    /// Outside a calling rule's window (a state's calling hours, a weekday it bans, an
    /// organisation's own rule); the note names the rule.
    CallingRule,
    /// A calling rule's limit on attempts (e.g. three per 24 hours) is reached; the note
    /// names the rule.
    CallingRuleAttempts,
    /// Every caller number of the organisation for the channel has reached its daily cap.
    CallerNumberCap,
}

/// Why a step was not run at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The number is on the suppression list.
    Suppressed,
    /// No instant is inside both the template's calling hours and the calling rules that
    /// apply to the contact (e.g. a 20:00–21:00 template for a state that ends calls at 20:00).
    NoAllowedWindow,
    /// The plan has no step at this index (the driver passed a different plan than the one
    /// the sequence started with). Defensive: ends the sequence instead of panicking.
    MissingStep,
    /// The organisation's eligibility hook answered "not eligible" (or failed, under the
    /// default policy); the note carries the action and the hook's reason.
    Ineligible,
}

/// One history entry. Each carries what is needed to answer "why wasn't this patient called?"
/// without reading anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Note {
    /// A step's first attempt was scheduled.
    StepScheduled {
        /// 0-based step index.
        step: usize,
        /// Always 1.
        attempt: u32,
        /// When it becomes due.
        due_at: DateTime<Utc>,
    },
    /// A due step/attempt was held back.
    Deferred {
        /// 0-based step index.
        step: usize,
        /// 1-based attempt.
        attempt: u32,
        /// What held it back (the constraint that pushed it latest).
        reason: DeferReason,
        /// When it will be tried again.
        until: DateTime<Utc>,
        /// The calling rule that held it back, for the `calling-rule` reasons.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// A step was not run, and the sequence ended (or, for `ineligible` with `skip-step`,
    /// went on to its next step).
    Skipped {
        /// 0-based step index.
        step: usize,
        /// 1-based attempt that would have run.
        attempt: u32,
        /// Why.
        reason: SkipReason,
        /// For `ineligible`: what the answer did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<EligibilityAction>,
        /// For `ineligible`: the eligibility hook's reason, or `hook-error: <class>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook_reason: Option<String>,
    },
    /// An encounter was started.
    EncounterStarted {
        /// 0-based step index.
        step: usize,
        /// 1-based attempt.
        attempt: u32,
        /// Call or SMS.
        channel: Channel,
    },
    /// An encounter ended.
    EncounterEnded {
        /// 0-based step index.
        step: usize,
        /// 1-based attempt.
        attempt: u32,
        /// What the channel reported.
        outcome: EncounterOutcome,
    },
    /// A call will be tried again.
    RetryScheduled {
        /// 0-based step index.
        step: usize,
        /// The next attempt (1-based).
        attempt: u32,
        /// When it becomes due.
        due_at: DateTime<Utc>,
    },
    /// A call step ended on a voicemail that is not retried, and its fixed text follows:
    /// due at the voicemail's end, as an SMS encounter (step, `attempt`).
    VoicemailTextScheduled {
        /// 0-based step index (the call step's).
        step: usize,
        /// The text's attempt: the one after the call's last.
        attempt: u32,
        /// When it becomes due.
        due_at: DateTime<Utc>,
    },
    /// The text after a voicemail ended: sent (the provider took it), or not (it failed, or
    /// the carrier refused it as an opt-out). Never sent again either way.
    VoicemailTextEnded {
        /// 0-based step index (the call step's).
        step: usize,
        /// The text's attempt.
        attempt: u32,
        /// Whether it was sent.
        sent: bool,
    },
    /// Paused through the API.
    Paused,
    /// Resumed through the API.
    Resumed,
    /// Cancelled through the API.
    Cancelled,
    /// A started encounter was not handed to its provider (see [`Event::EncounterWithheld`]).
    EncounterWithheld {
        /// 0-based step index.
        step: usize,
        /// 1-based attempt.
        attempt: u32,
        /// Why.
        reason: Withheld,
    },
    /// An encounter ended with an opt-out after the sequence had moved on (cancelled, or a
    /// late report): the number was suppressed all the same.
    LateOptOut,
    /// The sequence ended.
    Ended {
        /// The same text as `outcome_description`.
        description: String,
    },
}

/// The result of [`step`](crate::step): the state to store and the actions to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub state: SequenceState,
    /// What to do, in order. Empty when the event changed nothing worth recording.
    pub actions: Vec<Action>,
}
