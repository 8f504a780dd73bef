//! Clarion's channels. For now: the **simulator**, the default channel provider for
//! development, demos, tests and load tests.
//!
//! The simulator is a set of pure functions. [`simulate`] takes one [`EncounterRequest`] (one
//! attempt of one step of one sequence, on a [`Channel`]) and returns a [`SimulatedEncounter`]:
//! the outcome, the statuses the encounter passes through with their offsets from its start,
//! when it ends, and the final [`clarion_webhooks::Call`] or [`clarion_webhooks::Sms`] object
//! exactly as it goes into the End of Sequence Report. The engine drives its own clock through
//! the timeline; the simulator never reads a clock, does no I/O and uses no global RNG.
//!
//! **Determinism.** Every random choice (the outcome when none is scripted, the wording, the
//! ring and talk times, whether the contact interrupts or asks for a repeat) comes from a
//! ChaCha8 stream seeded with (sequence id, step, attempt, channel). The same request gives
//! byte-identical output on every run and every machine; different sequences read differently.
//!
//! **Outcomes.** An enrollment may script outcomes (`simulation.outcomes`, checked with
//! [`validate_outcome`]); otherwise [`pick_outcome`] draws from a realistic mix
//! ([`outcome_mix`]). The outcomes are the engine's [`EncounterOutcome`] (re-exported here
//! with the engine's [`Channel`]): the simulator gives calls twelve and SMS conversations five
//! ([`simulated_outcomes`]). Call outcomes that reached the contact without achieving the purpose are
//! reported as `unresolved` with the matching `failure_reason`.
//!
//! **Realism.** Transcripts are `AI:`/`User:` turns that follow the assistant's purpose, use
//! the contact's first name and the variables `appointment_date`, `appointment_time`,
//! `provider_name` and `location` when present, and fit the outcome (the patient declines,
//! opts out, asks for a callback, is transferred, drops off, …). Several phrasings exist for
//! each situation. Some calls contain interruptions and requests to repeat, and
//! `repetition_count`/`interruption_count` are counted from the transcript by the rules in
//! [`analysis`]. Custom analysis fields get values consistent with the outcome. The contact's
//! phone number never appears in a transcript, voicemail message or summary. The patient's
//! lines are revocations of consent ([`revocation`]) exactly when the outcome is an opt-out
//! (`tests/encounters.rs` holds the two in step), so a simulated report reads as Vapi's would.
//!
//! **Timing.** Calls queue for under 3 s, ring 5–20 s before a person answers (15–25 s before
//! voicemail, 18–25 s when nobody answers, 2–6 s for a busy signal), and talk for as long as the
//! transcript takes to say (380–460 ms a word plus turn latency), kept within 40 s–6 min (15 s
//! minimum for dropped and assistant-ended calls, 30–60 s for voicemail). `started_at` is when
//! the call was placed; `duration_ms` is `ended_at − started_at`, rings included, as Vapi's
//! `endedAt − startedAt` (so a call never answered lasted while it rang). SMS replies arrive minutes to hours after the opening text (always
//! before `sms_timeout`); a conversation with no reply ends at `sms_timeout`.

pub mod analysis;
mod custom;
mod dice;
mod outcome;
mod profile;
pub mod report_map;
pub mod revocation;
mod script;
mod simulate;

pub use clarion_engine::ParseError;
pub use outcome::{
    Channel, EncounterOutcome, can_simulate, nearest_simulated, outcome_mix, pick_outcome,
    simulated_outcomes, validate_outcome,
};
pub use profile::{AssistantProfile, ContactProfile, CustomField, CustomFieldKind};
pub use simulate::{
    EncounterReport, EncounterRequest, SimulatedEncounter, StatusStep, VoicemailAction, simulate,
};
